//! The built-in codecs against hostile bytes (random input never panics, every failure is a
//! typed `CodecError`, nothing past the limit is accepted) and round trips of arbitrary
//! values.

use std::collections::BTreeMap;

use meshwire_request_response::{bytes, cbor, json, Codec, CodecError};
use meshwire_swarm::StreamProtocol;
use proptest::prelude::*;

const P: StreamProtocol = StreamProtocol::new("/test/1");

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Rich {
    name: String,
    n: u64,
    signed: i32,
    blob: Vec<u8>,
    nested: Vec<Vec<u32>>,
    map: BTreeMap<String, Option<bool>>,
}

fn rich() -> impl Strategy<Value = Rich> {
    (
        ".{0,20}",
        any::<u64>(),
        any::<i32>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(proptest::collection::vec(any::<u32>(), 0..4), 0..4),
        proptest::collection::btree_map(".{0,8}", any::<Option<bool>>(), 0..4),
    )
        .prop_map(|(name, n, signed, blob, nested, map)| Rich {
            name,
            n,
            signed,
            blob,
            nested,
            map,
        })
}

/// Reads `input` as a request and as a response with `codec`; any error must be typed.
fn read_both<C: Codec>(mut codec: C, input: &[u8]) -> (bool, bool)
where
    C::Protocol: From<StreamProtocol>,
{
    futures::executor::block_on(async {
        let p: C::Protocol = P.into();
        let req = codec.read_request(&p, &mut &input[..]).await;
        let resp = codec.read_response(&p, &mut &input[..]).await;
        for e in [req.as_ref().err(), resp.as_ref().err()]
            .into_iter()
            .flatten()
        {
            assert!(CodecError::from_io(e).is_some(), "untyped error {e}");
        }
        (req.is_ok(), resp.is_ok())
    })
}

fn too_large(r: std::io::Result<impl Sized>, limit: u64) -> bool {
    matches!(r.err().as_ref().and_then(CodecError::from_io), Some(CodecError::TooLarge { limit: l }) if *l == limit)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_into_the_json_codec(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        read_both(json::Codec::<Rich, serde_json::Value>::default(), &input);
        read_both(json::Codec::<Vec<String>, u64>::default(), &input);
    }

    #[test]
    fn random_bytes_into_the_cbor_codec(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        read_both(cbor::Codec::<Rich, Vec<Vec<u64>>>::default(), &input);
        read_both(cbor::Codec::<BTreeMap<String, Vec<u8>>, Option<String>>::default(), &input);
    }

    #[test]
    fn random_bytes_into_the_bytes_codec(input in proptest::collection::vec(any::<u8>(), 0..512), limit in 0u64..600) {
        let codec = bytes::Codec::new(limit, limit);
        let fits = input.len() as u64 <= limit;
        prop_assert_eq!(read_both(codec, &input), (fits, fits));
        futures::executor::block_on(async {
            let got = codec.clone().read_request(&P, &mut &input[..]).await;
            if fits { assert_eq!(got.unwrap(), input) } else { assert!(too_large(got, limit)) }
        });
    }

    /// Valid messages past a limit are refused, typed, by the reader and the writer alike;
    /// within it they round-trip.
    #[test]
    fn serde_codecs_round_trip_within_their_limits(value in rich(), limit in 1u64..400) {
        futures::executor::block_on(async {
            let json_codec = json::Codec::<Rich, Rich>::default().set_request_size_maximum(limit);
            let cbor_codec = cbor::Codec::<Rich, Rich>::default().set_response_size_maximum(limit);
            let json_bytes = serde_json::to_vec(&value).unwrap();

            let mut wire = Vec::new();
            let written = json_codec.clone().write_request(&P, &mut wire, value.clone()).await;
            if json_bytes.len() as u64 <= limit {
                written.unwrap();
                assert_eq!(wire, json_bytes, "serde_json::to_vec bytes");
                assert_eq!(json_codec.clone().read_request(&P, &mut &wire[..]).await.unwrap(), value);
            } else {
                assert!(too_large(written, limit));
                assert!(wire.is_empty(), "nothing written");
                let read = json_codec.clone().read_request(&P, &mut &json_bytes[..]).await;
                assert!(too_large(read, limit));
            }

            let mut wire = Vec::new();
            let written = cbor_codec.clone().write_response(&P, &mut wire, value.clone()).await;
            let full = cbor_codec.clone().set_response_size_maximum(u64::MAX);
            let mut unbounded = Vec::new();
            full.clone().write_response(&P, &mut unbounded, value.clone()).await.unwrap();
            if unbounded.len() as u64 <= limit {
                written.unwrap();
                assert_eq!(wire, unbounded);
                assert_eq!(cbor_codec.clone().read_response(&P, &mut &wire[..]).await.unwrap(), value);
            } else {
                assert!(too_large(written, limit));
                let read = cbor_codec.clone().read_response(&P, &mut &unbounded[..]).await;
                assert!(too_large(read, limit));
            }
        });
    }

    /// A valid message cut anywhere fails typed (or, for JSON numbers, may still parse).
    #[test]
    fn truncated_messages_fail_typed(value in rich(), cut in any::<prop::sample::Index>()) {
        let whole = cbor4ii_bytes(&value);
        let at = cut.index(whole.len());
        let (ok, _) = read_both(cbor::Codec::<Rich, Rich>::default(), &whole[..at]);
        prop_assert!(!ok, "a cut CBOR message decoded");
        let json_bytes = serde_json::to_vec(&value).unwrap();
        let at = cut.index(json_bytes.len());
        let (ok, _) = read_both(json::Codec::<Rich, Rich>::default(), &json_bytes[..at]);
        prop_assert!(!ok, "a cut JSON object parsed");
    }
}

fn cbor4ii_bytes(value: &Rich) -> Vec<u8> {
    let mut out = Vec::new();
    futures::executor::block_on(cbor::Codec::<Rich, Rich>::default().write_request(
        &P,
        &mut out,
        value.clone(),
    ))
    .unwrap();
    out
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    // 100,000 nested arrays (CBOR 0x81 = array of one) and JSON brackets.
    let cbor_input = vec![0x81u8; 100_000];
    assert_eq!(
        read_both(cbor::Codec::<serde_json::Value, ()>::default(), &cbor_input),
        (false, false)
    );
    let json_input = "[".repeat(100_000);
    assert_eq!(
        read_both(
            json::Codec::<serde_json::Value, ()>::default(),
            json_input.as_bytes()
        ),
        (false, false)
    );
}

#[test]
fn a_declared_huge_length_fails_without_allocating_it() {
    // CBOR array header declaring 2^64-1 elements, then nothing; byte string declaring
    // 4 GiB, then 3 bytes.
    let huge_array = [0x9bu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(
        read_both(
            cbor::Codec::<Vec<u64>, Vec<Vec<u8>>>::default(),
            &huge_array
        ),
        (false, false)
    );
    let huge_bytes = [0x5bu8, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3];
    assert_eq!(
        read_both(
            cbor::Codec::<serde_bytes_like::Bytes, String>::default(),
            &huge_bytes
        ),
        (false, false)
    );
}

/// A byte-string type without pulling in `serde_bytes`.
mod serde_bytes_like {
    use serde::de::{Deserialize, Deserializer, Visitor};

    #[derive(Debug)]
    pub struct Bytes(#[allow(dead_code)] pub Vec<u8>);

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
            }
            d.deserialize_bytes(V)
        }
    }

    impl serde::Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
}
