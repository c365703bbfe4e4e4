//! The command line every service shares: `SERVICE [--config FILE] [COMMAND]`.

use std::path::PathBuf;

pub const USAGE: &str =
    "usage: SERVICE [--config FILE] [run | migrate | refresh-metrics | check-config]

  run              consume until SIGTERM/SIGINT (default)
  migrate          apply the ClickHouse migrations and exit
  refresh-metrics  rebuild the adoption snapshots (adoption_merchant_monthly, _daily) and exit
  check-config     validate the configuration, print it (secrets redacted) and exit

Configuration: defaults, then FILE (or $UMKM_CONFIG), then UMKM__SECTION__KEY environment
variables; see the README's configuration reference.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    Migrate,
    RefreshMetrics,
    CheckConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub command: Command,
    /// `--config FILE`, else `$UMKM_CONFIG`.
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Cli(Cli),
    Help,
    /// A usage error, to print with [`USAGE`] (exit code 2).
    Error(String),
}

/// Parses the arguments after the program name; `env_config` is `$UMKM_CONFIG`.
pub fn parse(args: impl IntoIterator<Item = String>, env_config: Option<PathBuf>) -> Parsed {
    let mut args = args.into_iter();
    let mut cli = Cli {
        command: Command::Run,
        config: env_config,
    };
    while let Some(a) = args.next() {
        cli.command = match a.as_str() {
            "--config" | "-c" => match args.next() {
                Some(f) => {
                    cli.config = Some(PathBuf::from(f));
                    continue;
                }
                None => return Parsed::Error("--config needs a file".into()),
            },
            "-h" | "--help" => return Parsed::Help,
            "run" => Command::Run,
            "migrate" => Command::Migrate,
            "refresh-metrics" => Command::RefreshMetrics,
            "check-config" => Command::CheckConfig,
            other => return Parsed::Error(format!("unknown argument {other:?}")),
        };
    }
    Parsed::Cli(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str], env: Option<&str>) -> Parsed {
        parse(args.iter().map(|s| s.to_string()), env.map(PathBuf::from))
    }

    #[test]
    fn commands_and_config_files() {
        assert_eq!(
            p(&[], None),
            Parsed::Cli(Cli {
                command: Command::Run,
                config: None
            })
        );
        assert_eq!(
            p(&["refresh-metrics"], Some("/etc/u.toml")),
            Parsed::Cli(Cli {
                command: Command::RefreshMetrics,
                config: Some("/etc/u.toml".into())
            })
        );
        assert_eq!(
            p(&["-c", "a.toml", "migrate"], Some("/etc/u.toml")),
            Parsed::Cli(Cli {
                command: Command::Migrate,
                config: Some("a.toml".into())
            })
        );
        assert_eq!(p(&["check-config", "--help"], None), Parsed::Help);
    }

    #[test]
    fn usage_errors() {
        assert_eq!(
            p(&["--config"], None),
            Parsed::Error("--config needs a file".into())
        );
        assert_eq!(
            p(&["serve"], None),
            Parsed::Error("unknown argument \"serve\"".into())
        );
    }
}
