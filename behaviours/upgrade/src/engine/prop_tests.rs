//! Random schedules of sends, reads, partial deliveries, new paths, path deaths and time, with
//! messages of one size or of varying sizes (the byte credit): every message arrives exactly
//! once, in order, both ways, and no side ever fails (a sender within its credit never
//! sends what the receiver must refuse).

use std::time::Duration;

use proptest::prelude::*;

use super::harness::{Net, A, B};
use super::*;

#[derive(Debug, Clone)]
enum Step {
    Send(usize, u64),
    Pump(usize, usize),
    Deliver(usize, usize, usize),
    Read(usize),
    Open(usize, bool),
    Kill(usize),
    Tick(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let side = 0..2usize;
    prop_oneof![
        4 => (side.clone(), 1..40u64).prop_map(|(s, n)| Step::Send(s, n)),
        4 => (side.clone(), 1..30usize).prop_map(|(s, n)| Step::Pump(s, n)),
        6 => (0..4usize, side.clone(), 1..30usize).prop_map(|(p, s, n)| Step::Deliver(p, s, n)),
        2 => side.clone().prop_map(Step::Read),
        1 => (side, any::<bool>()).prop_map(|(s, d)| Step::Open(s, d)),
        1 => (0..4usize).prop_map(Step::Kill),
        1 => (0..1500u64).prop_map(Step::Tick),
    ]
}

fn nth_path(net: &Net, i: usize) -> Option<PathId> {
    let paths: Vec<PathId> = net.links.keys().copied().collect();
    (!paths.is_empty()).then(|| paths[i % paths.len()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_switches_losses_and_reorderings_never_lose_duplicate_or_reorder(
        steps in proptest::collection::vec(step(), 1..200),
        padded in any::<bool>(),
        data_runs in any::<bool>(),
    ) {
        // Windows of 32 and 24 of the harness's 8-byte messages; padded, messages of 8 to
        // 68 bytes, so the credit's offsets depend on every size before.
        const MSG: u64 = MESSAGE_COST + 8;
        let config = SessionConfig::default()
            .with_max_message(68)
            .with_send_window_bytes(32 * MSG as usize)
            .with_recv_window_bytes(24 * MSG)
            .with_fallback_window(Duration::from_millis(700))
            .with_drain_timeout(Duration::from_millis(300))
            .with_path_timeout(Duration::from_secs(3600));
        let mut net = Net::new(config);
        net.padded = padded;
        // Messages also in runs (`poll_data_framed`), as the driver's pump takes them.
        net.data_runs = data_runs;
        net.open(A, PathKind::Relayed);
        for step in steps {
            match step {
                Step::Send(side, n) => { net.send(side, n); }
                Step::Pump(side, n) => net.pump(side, n),
                Step::Deliver(i, side, n) => {
                    if let Some(path) = nth_path(&net, i) {
                        net.deliver(path, side, n);
                    }
                }
                // `read` asserts each message is the next number.
                Step::Read(side) => net.read(side),
                Step::Open(side, direct) => {
                    let kind = if direct { PathKind::Direct } else { PathKind::Relayed };
                    if net.engines[side].open_paths() < 3 {
                        net.open(side, kind);
                    }
                }
                Step::Kill(i) => {
                    if let Some(path) = nth_path(&net, i) {
                        net.kill(path);
                    }
                }
                Step::Tick(ms) => net.tick(Duration::from_millis(ms)),
            }
        }
        // Then a path is made available (as the driver does on NoPath) and everything settles:
        // every message sent, both ways, has been delivered.
        for _ in 0..4 {
            net.settle();
            if net.engines[A].current_path().is_none() || net.engines[B].current_path().is_none() {
                net.open(A, PathKind::Direct);
            }
            net.tick(Duration::from_millis(10));
        }
        net.settle();
        prop_assert_eq!(net.received, [net.next_send[B], net.next_send[A]]);
        let failed = net.events.iter().flatten().find(|e| matches!(e, SessionEvent::Failed(_)));
        prop_assert!(failed.is_none(), "{:?}", failed);
    }
}
