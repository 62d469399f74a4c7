//! The running queries: one module per kind of query holding all of that kind's logic
//! ([`QueryKind`]), and [`Queries`], the bookkeeping they share (ids, deadlines, which
//! queries changed since they were last driven).

mod bootstrap;
mod find_node;
mod get_value;
mod providers;
mod put_value;
mod step;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

pub(crate) use bootstrap::Bootstrap;
pub(crate) use find_node::FindNode;
pub(crate) use get_value::GetValue;
pub(crate) use providers::{AddProvider, GetProviders};
pub(crate) use put_value::PutValue;
pub(crate) use step::{AfterLookup, Ctx, Outcome, QueryKind};

use crate::query::{QueryId, QueryOrigin, QueryStats};

/// The state of a query, by kind.
#[derive(Debug)]
pub(crate) enum QueryState {
    FindNode(FindNode),
    GetValue(GetValue),
    PutValue(PutValue),
    AddProvider(AddProvider),
    GetProviders(GetProviders),
    Bootstrap(Bootstrap),
}

impl QueryState {
    /// The kind's logic.
    pub fn kind(&mut self) -> &mut dyn QueryKind {
        match self {
            QueryState::FindNode(q) => q,
            QueryState::GetValue(q) => q,
            QueryState::PutValue(q) => q,
            QueryState::AddProvider(q) => q,
            QueryState::GetProviders(q) => q,
            QueryState::Bootstrap(q) => q,
        }
    }
}

/// A running query.
#[derive(Debug)]
pub(crate) struct Query {
    pub origin: QueryOrigin,
    /// Set for the bucket-refresh lookups of a bootstrap: they report to it, not to the user.
    pub parent: Option<QueryId>,
    pub state: QueryState,
    pub stats: QueryStats,
    deadline: Option<Instant>,
    dirty: bool,
}

/// The running queries.
#[derive(Debug, Default)]
pub(crate) struct Queries {
    map: BTreeMap<QueryId, Query>,
    /// Queries changed since they were last driven.
    dirty: VecDeque<QueryId>,
    deadlines: BTreeSet<(Instant, QueryId)>,
    next_id: u64,
}

impl Queries {
    /// Adds a query ending at `deadline`, marked to be driven.
    pub fn insert(
        &mut self,
        origin: QueryOrigin,
        parent: Option<QueryId>,
        state: QueryState,
        now: Instant,
        deadline: Instant,
    ) -> QueryId {
        let id = QueryId(self.next_id);
        self.next_id += 1;
        self.deadlines.insert((deadline, id));
        self.map.insert(
            id,
            Query {
                origin,
                parent,
                state,
                stats: QueryStats::new(now),
                deadline: Some(deadline),
                dirty: false,
            },
        );
        self.mark_dirty(id);
        id
    }

    /// Query `id`.
    pub fn get_mut(&mut self, id: &QueryId) -> Option<&mut Query> {
        self.map.get_mut(id)
    }

    /// Whether query `id` runs.
    pub fn contains(&self, id: &QueryId) -> bool {
        self.map.contains_key(id)
    }

    /// Number of queries running.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Removes query `id` (and its deadline).
    pub fn remove(&mut self, id: &QueryId) -> Option<Query> {
        let q = self.map.remove(id)?;
        if let Some(d) = q.deadline {
            self.deadlines.remove(&(d, *id));
        }
        Some(q)
    }

    /// Query `id` no longer times out as a whole.
    pub fn clear_deadline(&mut self, id: &QueryId) {
        if let Some(d) = self.map.get_mut(id).and_then(|q| q.deadline.take()) {
            self.deadlines.remove(&(d, *id));
        }
    }

    /// Marks query `id` to be driven.
    pub fn mark_dirty(&mut self, id: QueryId) {
        if let Some(q) = self.map.get_mut(&id) {
            if !q.dirty {
                q.dirty = true;
                self.dirty.push_back(id);
            }
        }
    }

    /// The next query to drive (its mark cleared).
    pub fn next_dirty(&mut self) -> Option<QueryId> {
        while let Some(id) = self.dirty.pop_front() {
            if let Some(q) = self.map.get_mut(&id) {
                q.dirty = false;
                return Some(id);
            }
        }
        None
    }

    /// The earliest query deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// A query whose deadline is at or before `now`, its deadline removed.
    pub fn pop_expired(&mut self, now: Instant) -> Option<QueryId> {
        let &(t, id) = self.deadlines.first()?;
        if t > now {
            return None;
        }
        self.deadlines.remove(&(t, id));
        if let Some(q) = self.map.get_mut(&id) {
            q.deadline = None;
        }
        Some(id)
    }
}
