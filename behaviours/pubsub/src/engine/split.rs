//! Control messages cut into RPCs that fit `max_transmit_size`.

use super::wire;
use crate::wire::ControlMessage;

/// Bytes an RPC spends around its control message and each entry (tags and length prefixes).
const ENVELOPE: usize = 16;

/// `control` as control messages whose RPCs each fit `max` bytes: entries are packed greedily
/// and id lists of IHAVE/IWANT/IDONTWANT cut where needed.
pub(super) fn split_control(control: ControlMessage, max: usize) -> Vec<ControlMessage> {
    use prost::Message as _;
    let budget = max.saturating_sub(ENVELOPE);
    let mut out = vec![ControlMessage::default()];
    let mut used = 0usize;
    // Adds one entry built by `add` whose encoded size is `size`.
    let mut place = |size: usize, add: &mut dyn FnMut(&mut ControlMessage)| {
        if used + size > budget && used > 0 {
            out.push(ControlMessage::default());
            used = 0;
        }
        used += size;
        if let Some(last) = out.last_mut() {
            add(last);
        }
    };
    for g in control.graft {
        place(g.encoded_len() + ENVELOPE, &mut |c| c.graft.push(g.clone()));
    }
    for p in control.prune {
        place(p.encoded_len() + ENVELOPE, &mut |c| c.prune.push(p.clone()));
    }
    for ch in control.choke {
        place(ch.encoded_len() + ENVELOPE, &mut |c| {
            c.choke.push(ch.clone())
        });
    }
    for un in control.unchoke {
        place(un.encoded_len() + ENVELOPE, &mut |c| {
            c.unchoke.push(un.clone())
        });
    }
    if control.choke_supported.is_some() {
        place(ENVELOPE, &mut |c| {
            c.choke_supported = control.choke_supported
        });
    }
    for ihave in control.ihave {
        for ids in chunk_ids(ihave.message_ids, budget / 2) {
            let entry = wire::ControlIHave {
                topic_id: ihave.topic_id.clone(),
                message_ids: ids,
            };
            place(entry.encoded_len() + ENVELOPE, &mut |c| {
                c.ihave.push(entry.clone())
            });
        }
    }
    for iwant in control.iwant {
        for ids in chunk_ids(iwant.message_ids, budget / 2) {
            let entry = wire::ControlIWant { message_ids: ids };
            place(entry.encoded_len() + ENVELOPE, &mut |c| {
                c.iwant.push(entry.clone())
            });
        }
    }
    for idontwant in control.idontwant {
        for ids in chunk_ids(idontwant.message_ids, budget / 2) {
            let entry = wire::ControlIDontWant { message_ids: ids };
            place(entry.encoded_len() + ENVELOPE, &mut |c| {
                c.idontwant.push(entry.clone())
            });
        }
    }
    out.retain(|c| !c.is_empty());
    out
}

/// Cuts a list of ids into lists of at most `budget` encoded bytes each (at least one id each).
fn chunk_ids(ids: Vec<Vec<u8>>, budget: usize) -> Vec<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for id in ids {
        let size = id.len() + 1 + prost::length_delimiter_len(id.len());
        if used + size > budget && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            used = 0;
        }
        used += size;
        current.push(id);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}
