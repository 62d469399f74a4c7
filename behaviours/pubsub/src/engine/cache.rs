//! The message cache (recent messages by heartbeat window, served to IWANT and gossiped in
//! IHAVE) and the seen cache (ids of every message received lately, to drop duplicates).
//! Both are bounded.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use meshwire_core::PeerId;

use super::event::{MessageId, TopicHash};
use crate::wire::Message;

struct Entry {
    message: Message,
    topic: TopicHash,
    validated: bool,
    /// Times each peer was sent it in answer to IWANT.
    iwant: HashMap<PeerId, u32>,
}

/// Messages of the last `history_length` heartbeats.
pub(crate) struct MessageCache {
    entries: HashMap<MessageId, Entry>,
    /// Newest window first; each holds the ids added during one heartbeat.
    windows: VecDeque<Vec<MessageId>>,
    history_gossip: usize,
    max: usize,
}

impl MessageCache {
    pub(crate) fn new(history_length: usize, history_gossip: usize, max: usize) -> Self {
        let mut windows = VecDeque::with_capacity(history_length);
        windows.resize_with(history_length.max(1), Vec::new);
        MessageCache {
            entries: HashMap::new(),
            windows,
            history_gossip,
            max,
        }
    }

    /// Adds a message; `false` if it was there already or the cache is full.
    pub(crate) fn put(&mut self, id: &MessageId, message: Message, validated: bool) -> bool {
        if self.entries.len() >= self.max || self.entries.contains_key(id) {
            return false;
        }
        let topic = TopicHash::from(message.topic.clone());
        self.entries.insert(
            id.clone(),
            Entry {
                message,
                topic,
                validated,
                iwant: HashMap::new(),
            },
        );
        if let Some(w) = self.windows.front_mut() {
            w.push(id.clone());
        }
        true
    }

    /// A validated message for a peer's IWANT, counting the request: `None` once the peer
    /// was sent it `limit` times (or if it is absent or unvalidated).
    pub(crate) fn get_for_iwant(
        &mut self,
        id: &MessageId,
        peer: PeerId,
        limit: u32,
    ) -> Option<&Message> {
        let entry = self.entries.get_mut(id).filter(|e| e.validated)?;
        let count = entry.iwant.entry(peer).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(&entry.message)
    }

    /// The cached message with this id (validated or not).
    pub(crate) fn get(&self, id: &MessageId) -> Option<&Message> {
        self.entries.get(id).map(|e| &e.message)
    }

    /// Whether a message is held waiting for the application's verdict.
    pub(crate) fn is_pending(&self, id: &MessageId) -> bool {
        self.entries.get(id).is_some_and(|e| !e.validated)
    }

    /// Marks a message validated and returns it; `None` if absent or already validated.
    pub(crate) fn validate(&mut self, id: &MessageId) -> Option<Message> {
        let entry = self.entries.get_mut(id).filter(|e| !e.validated)?;
        entry.validated = true;
        Some(entry.message.clone())
    }

    /// Removes a message (rejected or ignored); the id stays in its window and is skipped.
    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<Message> {
        self.entries.remove(id).map(|e| e.message)
    }

    /// Ids of validated messages on `topic` from the last `history_gossip` windows.
    pub(crate) fn gossip_ids(&self, topic: &TopicHash) -> Vec<MessageId> {
        self.windows
            .iter()
            .take(self.history_gossip)
            .flatten()
            .filter(|id| {
                self.entries
                    .get(*id)
                    .is_some_and(|e| e.validated && &e.topic == topic)
            })
            .cloned()
            .collect()
    }

    /// The distinct topics of validated messages in the last `history_gossip` windows.
    pub(crate) fn gossip_topics(&self) -> std::collections::BTreeSet<TopicHash> {
        self.windows
            .iter()
            .take(self.history_gossip)
            .flatten()
            .filter_map(|id| self.entries.get(id).filter(|e| e.validated))
            .map(|e| e.topic.clone())
            .collect()
    }

    /// Opens a new window, dropping the oldest and its messages.
    pub(crate) fn shift(&mut self) {
        if let Some(old) = self.windows.pop_back() {
            for id in old {
                self.entries.remove(&id);
            }
        }
        self.windows.push_front(Vec::new());
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Ids seen in the last `ttl`, at most `max` (the oldest are forgotten first).
pub(crate) struct SeenCache {
    expiry: HashMap<MessageId, Instant>,
    order: VecDeque<(Instant, MessageId)>,
    max: usize,
}

impl SeenCache {
    pub(crate) fn new(max: usize) -> Self {
        SeenCache {
            expiry: HashMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    /// Records `id` until `until`; `false` if it was already there.
    pub(crate) fn insert(&mut self, id: MessageId, until: Instant) -> bool {
        if self.expiry.contains_key(&id) {
            return false;
        }
        if self.expiry.len() >= self.max {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.expiry.remove(&oldest);
            }
        }
        self.expiry.insert(id.clone(), until);
        self.order.push_back((until, id));
        true
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.expiry.contains_key(id)
    }

    /// Forgets the ids whose time is up.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some((until, _)) = self.order.front() {
            if *until > now {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.expiry.remove(&id);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.expiry.len()
    }
}
