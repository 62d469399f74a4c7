//! The three XX messages, their framing and the identity checks.

use std::time::Instant;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use meshwire_core::{Keypair, PeerId, PublicKey};

use super::io::NoiseOutput;
use super::payload;
use super::{NoiseError, MAX_HANDSHAKE_MESSAGE, NOISE_PARAMS, STATIC_KEY_DOMAIN};

/// Runs the handshake as the initiator (the side that dialed).
///
/// With `expected`, a responder authenticating as anyone else fails with
/// [`NoiseError::PeerIdMismatch`] before our identity is sent. Returns the responder's peer id
/// and the encrypted stream. Never times out by itself (see the module docs).
pub async fn handshake_outbound<S>(
    mut io: S,
    local: &Keypair,
    expected: Option<PeerId>,
) -> Result<(PeerId, NoiseOutput<S>), NoiseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut hs, our_payload) = start(local, true)?;
    let mut buf = vec![0u8; MAX_HANDSHAKE_MESSAGE];

    // -> e
    let n = hs.write_message(&[], &mut buf)?;
    send_frame(&mut io, &buf[..n]).await?;
    let sent = Instant::now();

    // <- e, ee, s, es + payload
    let msg = recv_frame(&mut io).await?;
    let rtt = sent.elapsed();
    let len = hs.read_message(&msg, &mut buf)?;
    let peer = verify(&hs, &buf[..len])?;
    if let Some(expected) = expected.filter(|e| *e != peer) {
        return Err(NoiseError::PeerIdMismatch {
            expected,
            actual: peer,
        });
    }

    // -> s, se + payload
    let n = hs.write_message(&our_payload, &mut buf)?;
    send_frame(&mut io, &buf[..n]).await?;

    let transport = hs.into_transport_mode()?;
    tracing::debug!(%peer, ?rtt, "noise: outbound handshake done");
    Ok((peer, NoiseOutput::new(io, transport, rtt)))
}

/// Runs the handshake as the responder (the side that accepted). Returns the initiator's peer
/// id and the encrypted stream. Never times out by itself (see the module docs).
pub async fn handshake_inbound<S>(
    mut io: S,
    local: &Keypair,
) -> Result<(PeerId, NoiseOutput<S>), NoiseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut hs, our_payload) = start(local, false)?;
    let mut buf = vec![0u8; MAX_HANDSHAKE_MESSAGE];

    // <- e
    let msg = recv_frame(&mut io).await?;
    let len = hs.read_message(&msg, &mut buf)?;
    if len != 0 {
        return Err(NoiseError::UnexpectedPayload);
    }

    // -> e, ee, s, es + payload
    let n = hs.write_message(&our_payload, &mut buf)?;
    send_frame(&mut io, &buf[..n]).await?;
    let sent = Instant::now();

    // <- s, se + payload
    let msg = recv_frame(&mut io).await?;
    let rtt = sent.elapsed();
    let len = hs.read_message(&msg, &mut buf)?;
    let peer = verify(&hs, &buf[..len])?;

    let transport = hs.into_transport_mode()?;
    tracing::debug!(%peer, ?rtt, "noise: inbound handshake done");
    Ok((peer, NoiseOutput::new(io, transport, rtt)))
}

/// A handshake state with a fresh static key, and our payload binding that key to `local`.
fn start(local: &Keypair, initiator: bool) -> Result<(snow::HandshakeState, Vec<u8>), NoiseError> {
    let params = NOISE_PARAMS.parse()?;
    let builder = snow::Builder::new(params);
    let static_key = builder.generate_keypair()?;
    let signed = [STATIC_KEY_DOMAIN.as_bytes(), &static_key.public].concat();
    let payload = payload::encode(&local.public().encode_protobuf(), &local.sign(&signed));
    let builder = builder.local_private_key(&static_key.private)?;
    let hs = if initiator {
        builder.build_initiator()?
    } else {
        builder.build_responder()?
    };
    Ok((hs, payload))
}

/// Checks the peer's payload against the static key the handshake authenticated.
fn verify(hs: &snow::HandshakeState, payload: &[u8]) -> Result<PeerId, NoiseError> {
    let payload = payload::decode(payload)?;
    if !payload.stream_muxers.is_empty() {
        tracing::debug!(muxers = ?payload.stream_muxers, "noise: peer offered early muxers (ignored)");
    }
    let key = PublicKey::decode_protobuf(payload.identity_key)?;
    let remote_static = hs
        .get_remote_static()
        .ok_or(NoiseError::BadPayload("no remote static key"))?;
    let signed = [STATIC_KEY_DOMAIN.as_bytes(), remote_static].concat();
    if payload.identity_sig.is_empty() || !key.verify(&signed, payload.identity_sig) {
        return Err(NoiseError::BadSignature);
    }
    Ok(key.to_peer_id())
}

/// Writes one length-prefixed handshake message and flushes.
async fn send_frame<S: AsyncWrite + Unpin>(io: &mut S, msg: &[u8]) -> Result<(), NoiseError> {
    let len = u16::try_from(msg.len()).map_err(|_| NoiseError::FrameTooLarge {
        len: msg.len(),
        max: u16::MAX as usize,
    })?;
    let mut frame = Vec::with_capacity(2 + msg.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(msg);
    io.write_all(&frame).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one length-prefixed handshake message, refusing lengths over
/// [`MAX_HANDSHAKE_MESSAGE`] before reading the body.
async fn recv_frame<S: AsyncRead + Unpin>(io: &mut S) -> Result<Vec<u8>, NoiseError> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_HANDSHAKE_MESSAGE {
        return Err(NoiseError::FrameTooLarge {
            len,
            max: MAX_HANDSHAKE_MESSAGE,
        });
    }
    let mut msg = vec![0u8; len];
    io.read_exact(&mut msg).await?;
    Ok(msg)
}
