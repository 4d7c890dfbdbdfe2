//! What every handler reads: the pieces the service handed over, and the security settings.

use std::fmt;

use crate::security::Security;

/// The console's shared state (behind an `Arc`).
pub(crate) struct State {
    #[cfg(feature = "jobs")]
    pub(crate) jobs: Option<crate::jobs::JobsState>,
    #[cfg(feature = "supervision")]
    pub(crate) supervisor: Option<wharf_core::supervisor::SupervisorHandle>,
    pub(crate) panels: Vec<crate::clients::Panel>,
    pub(crate) security: Security,
    pub(crate) title: String,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("title", &self.title)
            .finish_non_exhaustive()
    }
}
