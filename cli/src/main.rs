//! `meshwire`: see `meshwire --help` and the `meshwire_cli` crate docs.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshwire_cli::client::{self, KadOp};
use meshwire_cli::config::{Config, Dur, LogFormat};
use meshwire_cli::{keyfile, load_config, run, Flags};

#[derive(Parser, Debug)]
#[command(
    name = "meshwire",
    version,
    about = "A meshwire node and its client commands"
)]
struct Cli {
    /// Log filter, `RUST_LOG` syntax (e.g. `info,meshwire_kad=debug`); default `log.filter`
    /// of the config, else `warn`.
    #[arg(long, global = true, env = "RUST_LOG")]
    log: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, env = "MESHWIRE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The node's identity: an ed25519 key file.
    Id {
        #[command(subcommand)]
        op: IdOp,
    },
    /// Runs a node until SIGINT/SIGTERM.
    Node(NodeArgs),
    /// Pings a peer (`<address>/p2p/<peer id>`) from a short-lived node.
    Ping {
        /// The peer's address, ending in `/p2p/<peer id>`.
        addr: String,
        /// Pings to show.
        #[arg(long, default_value_t = 3)]
        count: usize,
        /// Give up after this long (e.g. `10s`).
        #[arg(long, default_value = "10s")]
        timeout: Dur,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Kademlia from a short-lived node.
    Kad {
        #[command(subcommand)]
        op: KadCmd,
        #[command(flatten)]
        common: ClientArgs,
        /// Peers to reach the DHT through (`<address>/p2p/<peer id>`); default `node.bootstrap`.
        #[arg(long, global = true, value_delimiter = ',', env = "MESHWIRE_BOOTSTRAP")]
        bootstrap: Vec<String>,
        /// Give up after this long.
        #[arg(long, global = true, default_value = "15s")]
        timeout: Dur,
    },
    /// Chat on a pubsub topic: stdin lines are published, messages printed with their author.
    Chat {
        /// The topic.
        topic: String,
        /// Peers to connect to (`<address>/p2p/<peer id>`); default `node.bootstrap`.
        #[arg(long, value_delimiter = ',', env = "MESHWIRE_BOOTSTRAP")]
        bootstrap: Vec<String>,
        /// Addresses to listen on, so other chatters can connect (default: none).
        #[arg(long, value_delimiter = ',')]
        listen: Vec<String>,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// RPC: call a procedure found through the DHT, or serve one.
    Rpc {
        #[command(subcommand)]
        op: RpcCmd,
    },
}

#[derive(Subcommand, Debug)]
enum RpcCmd {
    /// Calls `<name>` with a JSON argument from a short-lived node; prints the result.
    Call {
        /// The procedure, reverse-DNS (`org.example.echo`).
        name: String,
        /// The argument, JSON (sent as its bytes).
        json: String,
        /// The realm to look in (`rpc.realm`; default `default`).
        #[arg(long, alias = "rpc-realm")]
        realm: Option<String>,
        /// Peers to reach the DHT through (`<address>/p2p/<peer id>`); default `node.bootstrap`.
        #[arg(long, value_delimiter = ',', env = "MESHWIRE_BOOTSTRAP")]
        bootstrap: Vec<String>,
        /// Give up after this long (providers are looked up again until then).
        #[arg(long, default_value = "15s")]
        timeout: Dur,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Runs a node (as `meshwire node`) that serves `<name>` with a built-in handler.
    Serve {
        /// The procedure, reverse-DNS (`org.example.echo`).
        name: String,
        /// The handler: answer with the JSON argument (the only built-in handler).
        #[arg(long, required = true)]
        echo: bool,
        /// The realm to announce in (`rpc.realm`; `--realm` is the node's SWIM realms).
        #[arg(long)]
        rpc_realm: Option<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand, Debug)]
enum IdOp {
    /// Writes a new key file (mode 0600; never overwrites) and prints its peer id.
    New {
        /// The file.
        path: PathBuf,
    },
    /// Prints the peer id of a key file.
    Show {
        /// The file.
        path: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum KadCmd {
    /// Stores a value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Reads a value.
    Get {
        /// The key.
        key: String,
    },
    /// Announces this node as a provider of a key.
    Provide {
        /// The key.
        key: String,
    },
    /// Lists the providers of a key.
    Providers {
        /// The key.
        key: String,
    },
}

#[derive(clap::Args, Debug)]
struct ClientArgs {
    /// A config file (its limits and timeouts apply; `node.listen` is ignored).
    #[arg(long, env = "MESHWIRE_CONFIG")]
    config: Option<PathBuf>,
    /// A key file; default a fresh identity.
    #[arg(long)]
    key: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// The config file (`cli/meshwire.example.toml` documents every key).
    #[arg(long, env = "MESHWIRE_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides one key: `--set kad.k=30` (repeatable; after the file and MESHWIRE__* variables).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// The key file (`node.key`).
    #[arg(long, env = "MESHWIRE_KEY")]
    key: Option<PathBuf>,
    /// Listen addresses (`node.listen`).
    #[arg(long, value_delimiter = ',', env = "MESHWIRE_LISTEN")]
    listen: Vec<String>,
    /// Bootstrap peers, `<address>/p2p/<peer id>` (`node.bootstrap`).
    #[arg(long, value_delimiter = ',', env = "MESHWIRE_BOOTSTRAP")]
    bootstrap: Vec<String>,
    /// SWIM realms to join (`node.realms`).
    #[arg(long = "realm", value_delimiter = ',', env = "MESHWIRE_REALMS")]
    realms: Vec<String>,
    /// Relays to listen through, `<address>/p2p/<relay id>` (`node.relay_listen`).
    #[arg(long, value_delimiter = ',', env = "MESHWIRE_RELAY_LISTEN")]
    relay_listen: Vec<String>,
    /// Serves /metrics and the status page on `<ip:port>` (`metrics.listen`).
    #[arg(long, env = "MESHWIRE_METRICS")]
    metrics: Option<String>,
}

fn init_logs(cli: &Cli, config: &Config) {
    let filter = cli
        .log
        .clone()
        .or_else(|| config.log.filter.clone())
        .unwrap_or_else(|| "warn".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("meshwire: warning: log filter {filter:?}: {e}; using \"warn\"");
        tracing_subscriber::EnvFilter::new("warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format.or(config.log.format).unwrap_or_default() {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The configuration of `meshwire node` (and `rpc serve`): file, environment, `--set`,
/// flags; logs initialised.
fn node_config(
    cli: &Cli,
    args: &NodeArgs,
) -> Result<(Config, meshwire_cli::config::Source), String> {
    let flags = Flags {
        key: args.key.clone(),
        listen: args.listen.clone(),
        bootstrap: args.bootstrap.clone(),
        realms: args.realms.clone(),
        relay_listen: args.relay_listen.clone(),
        metrics: args.metrics.clone(),
    };
    let (mut config, source) =
        load_config(args.config.as_deref(), std::env::vars(), &args.set, &flags)
            .map_err(|e| e.to_string())?;
    if config.node.listen.is_empty() {
        config.node.listen = vec!["/ip4/0.0.0.0/udp/0/quic-v1".into()];
    }
    init_logs(cli, &config);
    Ok((config, source))
}

fn client_config(
    cli: &Cli,
    common: &ClientArgs,
) -> Result<(Config, meshwire::core::Keypair), String> {
    let (config, _) = load_config(
        common.config.as_deref(),
        std::env::vars(),
        &[],
        &Flags::default(),
    )
    .map_err(|e| e.to_string())?;
    init_logs(cli, &config);
    let key = match &common.key {
        Some(p) => keyfile::load(p).map_err(|e| e.to_string())?,
        None => meshwire::core::Keypair::generate(),
    };
    Ok((config, key))
}

async fn main_inner(cli: Cli) -> Result<(), String> {
    match &cli.command {
        Command::Id { op } => match op {
            IdOp::New { path } => {
                let key = keyfile::create(path).map_err(|e| e.to_string())?;
                println!("{}", key.peer_id());
            }
            IdOp::Show { path } => {
                let key = keyfile::load(path).map_err(|e| e.to_string())?;
                println!("{}", key.peer_id());
            }
        },
        Command::Node(args) => {
            let (config, source) = node_config(&cli, args)?;
            run::run(config, source).await.map_err(|e| e.to_string())?;
        }
        Command::Chat {
            topic,
            bootstrap,
            listen,
            common,
        } => {
            let (config, key) = client_config(&cli, common)?;
            let bootstrap = if bootstrap.is_empty() {
                config.node.bootstrap.clone()
            } else {
                bootstrap.clone()
            };
            meshwire_cli::chat::chat(&config, key, topic, listen, &bootstrap)
                .await
                .map_err(|e| e.to_string())?;
        }
        Command::Rpc {
            op:
                RpcCmd::Serve {
                    name,
                    echo: _,
                    rpc_realm,
                    node,
                },
        } => {
            let (mut config, source) = node_config(&cli, node)?;
            if let Some(r) = rpc_realm {
                config.rpc.realm = Some(r.clone());
            }
            let name = name
                .parse::<meshwire::rpc::ProcedureName>()
                .map_err(|e| format!("procedure name {name:?}: {e}"))?;
            run::run_serving(config, source, vec![(name, run::BuiltinHandler::Echo)])
                .await
                .map_err(|e| e.to_string())?;
        }
        Command::Rpc {
            op:
                RpcCmd::Call {
                    name,
                    json,
                    realm,
                    bootstrap,
                    timeout,
                    common,
                },
        } => {
            let (mut config, key) = client_config(&cli, common)?;
            if let Some(r) = realm {
                config.rpc.realm = Some(r.clone());
            }
            let bootstrap = if bootstrap.is_empty() {
                config.node.bootstrap.clone()
            } else {
                bootstrap.clone()
            };
            client::rpc_call(&config, key, &bootstrap, name, json, timeout.0)
                .await
                .map_err(|e| e.to_string())?;
        }
        Command::Ping {
            addr,
            count,
            timeout,
            common,
        } => {
            let (config, key) = client_config(&cli, common)?;
            client::ping(&config, key, addr, *count, timeout.0)
                .await
                .map_err(|e| e.to_string())?;
        }
        Command::Kad {
            op,
            common,
            bootstrap,
            timeout,
        } => {
            let (config, key) = client_config(&cli, common)?;
            let bootstrap = if bootstrap.is_empty() {
                config.node.bootstrap.clone()
            } else {
                bootstrap.clone()
            };
            let op = match op {
                KadCmd::Put { key, value } => KadOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
                KadCmd::Get { key } => KadOp::Get { key: key.clone() },
                KadCmd::Provide { key } => KadOp::Provide { key: key.clone() },
                KadCmd::Providers { key } => KadOp::Providers { key: key.clone() },
            };
            client::kad(&config, key, &bootstrap, op, timeout.0)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshwire: error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main_inner(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshwire: error: {e}");
            ExitCode::FAILURE
        }
    }
}
