//! [`SharedNatProfile`]: the node's current NAT profile, readable by other behaviours.

use std::sync::{Arc, Mutex};

use crate::NatProfile;

/// A handle on the node's current NAT profile: the NAT detector writes it (its
/// `shared_profile()`), other behaviours read it — the relay registry decides from it whether
/// the node may register as a relay. Clones share the value; [`SharedNatProfile::version`]
/// changes with every write that changes it, so a reader can tell it changed without
/// comparing.
///
/// ```
/// use meshwire_nat::{Filtering, Mapping, NatProfile, SharedNatProfile};
///
/// let shared = SharedNatProfile::default();
/// let reader = shared.clone();
/// assert_eq!((reader.get(), reader.version()), (None, 0));
/// let cone = NatProfile {
///     mapping: Mapping::EndpointIndependent,
///     filtering: Filtering::EndpointIndependent,
///     port_preserving: true,
/// };
/// shared.set(Some(cone));
/// assert_eq!((reader.get(), reader.version()), (Some(cone), 1));
/// shared.set(Some(cone)); // unchanged: same version
/// assert_eq!(reader.version(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct SharedNatProfile(Arc<Mutex<(Option<NatProfile>, u64)>>);

impl SharedNatProfile {
    /// The current profile (`None`: not known).
    pub fn get(&self) -> Option<NatProfile> {
        self.0.lock().map(|g| g.0).unwrap_or(None)
    }

    /// Counts the changes: 0 before the first.
    pub fn version(&self) -> u64 {
        self.0.lock().map(|g| g.1).unwrap_or(0)
    }

    /// Sets the profile; the version moves only if it changed.
    pub fn set(&self, profile: Option<NatProfile>) {
        if let Ok(mut g) = self.0.lock() {
            if g.0 != profile {
                g.0 = profile;
                g.1 += 1;
            }
        }
    }
}
