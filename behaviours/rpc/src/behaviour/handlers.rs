//! The local handler registry: several handlers per name, taken in turn.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::name::ProcedureName;

/// What a handler returns: the result bytes, or an error message for the caller
/// ([`RemoteError::Handler`](crate::RemoteError::Handler)).
pub type HandlerResult = Result<Vec<u8>, String>;

/// A handler's future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A registered handler: an async function on the call's payload.
pub(crate) type Handler = Arc<dyn Fn(Vec<u8>) -> HandlerFuture + Send + Sync>;

/// Identifies one registered handler ([`Behaviour::unregister_handler`](crate::Behaviour::unregister_handler)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(u64);

/// The handlers of each name, with each name's turn.
#[derive(Default)]
pub(crate) struct Handlers {
    by_name: HashMap<ProcedureName, (Vec<(HandlerId, Handler)>, usize)>,
    next: u64,
}

impl Handlers {
    /// Adds a handler; returns its id and whether it is the name's first.
    pub(crate) fn add(&mut self, name: ProcedureName, handler: Handler) -> (HandlerId, bool) {
        self.next += 1;
        let id = HandlerId(self.next);
        let (list, _) = self.by_name.entry(name).or_default();
        list.push((id, handler));
        (id, list.len() == 1)
    }

    /// Removes every handler of `name`; returns how many there were.
    pub(crate) fn remove_name(&mut self, name: &ProcedureName) -> usize {
        self.by_name.remove(name).map_or(0, |(l, _)| l.len())
    }

    /// Removes handler `id`; returns its name if it was the name's last.
    pub(crate) fn remove(&mut self, id: HandlerId) -> Option<Option<ProcedureName>> {
        let name = self
            .by_name
            .iter()
            .find(|(_, (l, _))| l.iter().any(|(h, _)| *h == id))
            .map(|(n, _)| n.clone())?;
        let (list, _) = self.by_name.get_mut(&name)?;
        list.retain(|(h, _)| *h != id);
        if list.is_empty() {
            self.by_name.remove(&name);
            Some(Some(name))
        } else {
            Some(None)
        }
    }

    /// The next handler of `name`, in turn.
    pub(crate) fn pick(&mut self, name: &ProcedureName) -> Option<Handler> {
        let (list, turn) = self.by_name.get_mut(name)?;
        if list.is_empty() {
            return None;
        }
        let h = list[*turn % list.len()].1.clone();
        *turn = turn.wrapping_add(1);
        Some(h)
    }

    /// Handlers of `name`.
    pub(crate) fn count(&self, name: &ProcedureName) -> usize {
        self.by_name.get(name).map_or(0, |(l, _)| l.len())
    }

    /// The names served.
    pub(crate) fn names(&self) -> impl Iterator<Item = &ProcedureName> {
        self.by_name.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(tag: u8) -> Handler {
        Arc::new(move |_| Box::pin(async move { Ok(vec![tag]) }))
    }

    #[test]
    fn handlers_of_a_name_are_taken_in_turn_and_removed() {
        let n = ProcedureName::new("org.x.y").unwrap();
        let mut h = Handlers::default();
        let (a, first) = h.add(n.clone(), handler(1));
        assert!(first);
        let (_, first) = h.add(n.clone(), handler(2));
        assert!(!first);
        let picks: Vec<u8> = (0..4)
            .map(|_| futures::executor::block_on(h.pick(&n).unwrap()(vec![])).unwrap()[0])
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
        assert_eq!(h.remove(a), Some(None));
        assert_eq!(h.count(&n), 1);
        assert_eq!(h.remove_name(&n), 1);
        assert!(h.pick(&n).is_none());
        assert_eq!(h.remove(a), None);
    }
}
