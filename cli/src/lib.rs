//! The `meshwire` command (`cargo install --path cli`): a node with a key file and a config
//! file, `/metrics` and a status page, client subcommands (`ping`, `kad`, `rpc call`,
//! `chat`) and `rpc serve` (a node serving a built-in procedure). Built only from
//! the public API of the `meshwire` facade, so it is also the proof that the pieces compose.
//!
//! The configuration is TOML (`cli/meshwire.example.toml` documents every key), overridable
//! by `MESHWIRE__<SECTION>__<KEY>` variables, `--set section.key=value` and the dedicated
//! flags; a bad file is one line naming the file, line, key and what is accepted:
//!
//! ```
//! use meshwire_cli::config::{self, Source};
//!
//! let good = Source { path: "node.toml".into(), text: "[kad]\nk = 20\n".into() };
//! let mut table = config::parse(&good).unwrap();
//! config::set(&mut table, "swim.probe_interval", "\"200ms\"", "--set").unwrap();
//! let cfg = config::finish(table).unwrap();
//! assert_eq!(cfg.kad.k, Some(20));
//!
//! let bad = Source { path: "node.toml".into(), text: "[kad]\nkk = 20\n".into() };
//! let err = config::parse(&bad).unwrap_err().to_string();
//! assert!(err.starts_with("node.toml:2:1: kad.kk: unknown field `kk`, expected one of"), "{err}");
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod chat;
pub mod client;
pub mod config;
pub mod http;
pub mod keyfile;
pub mod metrics;
pub mod node;
pub mod run;
pub mod settings;
pub mod status;

use std::path::Path;

use config::{Config, ConfigError, Source};

/// The values of the dedicated flags (`--key`, `--listen`, ...), which win over the file,
/// the environment and `--set`. Empty lists and `None` leave the configuration as it is.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--key`.
    pub key: Option<std::path::PathBuf>,
    /// `--listen`.
    pub listen: Vec<String>,
    /// `--bootstrap`.
    pub bootstrap: Vec<String>,
    /// `--realm`.
    pub realms: Vec<String>,
    /// `--relay-listen`.
    pub relay_listen: Vec<String>,
    /// `--metrics`.
    pub metrics: Option<String>,
}

/// The configuration: the file at `path` (if any), then the `MESHWIRE__…` variables of
/// `env`, then each `--set section.key=value` of `sets`, then `flags`.
///
/// # Errors
///
/// [`ConfigError`], one line naming where and why.
pub fn load_config(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
    flags: &Flags,
) -> Result<(Config, Source), ConfigError> {
    let (mut table, source) = match path {
        Some(p) => config::read(p)?,
        None => (toml::Table::new(), Source::default()),
    };
    config::apply_env(&mut table, env)?;
    for s in sets {
        let origin = format!("--set {s}");
        let (name, value) = s.split_once('=').ok_or_else(|| ConfigError::Override {
            origin: origin.clone(),
            message: "expected section.key=value".into(),
        })?;
        config::set(&mut table, name.trim(), value.trim(), &origin)?;
    }
    let mut c = config::finish(table)?;
    if flags.key.is_some() {
        c.node.key.clone_from(&flags.key);
    }
    for (from, to) in [
        (&flags.listen, &mut c.node.listen),
        (&flags.bootstrap, &mut c.node.bootstrap),
        (&flags.realms, &mut c.node.realms),
        (&flags.relay_listen, &mut c.node.relay_listen),
    ] {
        if !from.is_empty() {
            to.clone_from(from);
        }
    }
    if flags.metrics.is_some() {
        c.metrics.listen.clone_from(&flags.metrics);
    }
    Ok((c, source))
}
