//! Serving inbound requests: [`KadEngine::handle_request`].

use std::time::Instant;

use meshwire_core::PeerId;

use super::config::MAX_PROVIDER_KEY_LEN;
use super::{InboundRequest, KadEngine, KadEvent, Mode};
use crate::kbucket::Key;
use crate::protocol::{ConnectionType, KadPeer, KadRequest, KadResponse, Record};
use crate::store::StoreError;

impl KadEngine {
    /// Handles a request from `from` and returns the response to send (`None`: send nothing
    /// and close the stream — in client mode, for ADD_PROVIDER, and for refused requests).
    pub fn handle_request(
        &mut self,
        from: PeerId,
        request: KadRequest,
        now: Instant,
    ) -> Option<KadResponse> {
        if self.mode == Mode::Client {
            tracing::debug!(%from, "ignoring inbound request in client mode");
            return None;
        }
        self.table.mark_seen(&from, now);
        let (mut response, mut event) = match request {
            KadRequest::Ping => (Some(KadResponse::Pong), InboundRequest::Ping),
            KadRequest::FindNode { key } => {
                let closer_peers = self.closer_peers(&Key::from_bytes(&key), &from);
                let n = closer_peers.len();
                (
                    Some(KadResponse::FindNode { closer_peers }),
                    InboundRequest::FindNode { closer_peers: n },
                )
            }
            KadRequest::GetValue { key } => {
                let record = self.records.get_stored(&key, now).map(|r| r.to_record(now));
                let closer_peers = self.closer_peers(&Key::from_bytes(key.as_bytes()), &from);
                let found = record.is_some();
                (
                    Some(KadResponse::GetValue {
                        record,
                        closer_peers,
                    }),
                    InboundRequest::GetValue { key, found },
                )
            }
            KadRequest::PutValue { record } => {
                let key = record.key.clone();
                let result = self
                    .check_record(&record)
                    .and_then(|()| self.records.put(record.clone(), false, now));
                let response = result.is_ok().then(|| {
                    let mut echo = record;
                    echo.ttl = None;
                    KadResponse::PutValue { record: echo }
                });
                (response, InboundRequest::PutValue { key, result })
            }
            KadRequest::GetProviders { key } => {
                if key.as_bytes().is_empty() || key.as_bytes().len() > MAX_PROVIDER_KEY_LEN {
                    tracing::debug!(%from, len = key.as_bytes().len(), "refusing GET_PROVIDERS with a bad key");
                    return None;
                }
                let provider_peers: Vec<KadPeer> = self
                    .providers
                    .get(&key, now)
                    .into_iter()
                    .map(|p| {
                        let mut addrs = p.addrs.clone();
                        if addrs.is_empty() {
                            addrs = self
                                .table
                                .get(&p.provider)
                                .map(|n| n.addrs.clone())
                                .unwrap_or_default();
                        }
                        KadPeer {
                            id: p.provider,
                            addrs,
                            connection: self.connection_type(&p.provider),
                        }
                    })
                    .collect();
                let closer_peers = self.closer_peers(&Key::from_bytes(key.as_bytes()), &from);
                let n = provider_peers.len();
                (
                    Some(KadResponse::GetProviders {
                        closer_peers,
                        provider_peers,
                    }),
                    InboundRequest::GetProviders { key, providers: n },
                )
            }
            KadRequest::AddProvider { key, provider } => {
                let result = if key.as_bytes().is_empty()
                    || key.as_bytes().len() > MAX_PROVIDER_KEY_LEN
                {
                    Ok(false)
                } else if provider.id != from {
                    tracing::debug!(%from, provider = %provider.id, "ignoring ADD_PROVIDER for another peer");
                    Ok(false)
                } else {
                    self.providers
                        .add(key.clone(), provider, now)
                        .map(|()| true)
                };
                (None, InboundRequest::AddProvider { key, result })
            }
        };
        if let Some(r) = response.as_mut() {
            // A response that does not fit would reset the stream: drop peers until it fits.
            if !r.trim_to(self.config.max_message_size) {
                tracing::warn!(%from, kind = ?r.message_type(), "response does not fit in a message");
            }
            match (&mut event, &*r) {
                (
                    InboundRequest::FindNode { closer_peers: n },
                    KadResponse::FindNode { closer_peers },
                ) => *n = closer_peers.len(),
                (
                    InboundRequest::GetProviders { providers: n, .. },
                    KadResponse::GetProviders { provider_peers, .. },
                ) => *n = provider_peers.len(),
                _ => {}
            }
        }
        self.events.push_back(KadEvent::InboundRequest {
            from,
            request: event,
        });
        self.drive(now);
        response
    }

    fn connection_type(&self, peer: &PeerId) -> ConnectionType {
        if !self.connected.is_empty() && self.connected.contains(peer) {
            ConnectionType::Connected
        } else {
            ConnectionType::NotConnected
        }
    }

    /// The `k` peers of the routing table closest to `target`, without `exclude`.
    fn closer_peers(&self, target: &Key, exclude: &PeerId) -> Vec<KadPeer> {
        self.table
            .closest(target, self.config.k + 1)
            .filter(|n| n.peer != *exclude)
            .take(self.config.k)
            .map(|n| KadPeer {
                id: n.peer,
                addrs: n.addrs.clone(),
                connection: self.connection_type(&n.peer),
            })
            .collect()
    }

    /// Refuses a record that could not be stored or that no message could carry.
    pub(super) fn check_record(&self, record: &Record) -> Result<(), StoreError> {
        let value = record.value.len();
        if value > self.config.store.max_value_bytes {
            return Err(StoreError::ValueTooLarge(value));
        }
        let (len, max) = (record.max_message_len(), self.config.max_message_size);
        if len > max {
            return Err(StoreError::RecordTooLarge { len, max });
        }
        Ok(())
    }
}
