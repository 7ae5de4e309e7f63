//! The demo's command line.

use std::fmt;
use std::time::Duration;

use super::config::{DemoConfig, LoadPlan};

/// The port the demo listens on when `--port` is not given.
pub const DEFAULT_PORT: u16 = 3000;

/// Background requests per second while the demo serves without `--load`.
pub const DEFAULT_SERVE_RATE: u32 = 20;

/// The demo's `--help` text.
pub const USAGE: &str = "\
palisade demo: a chaotic HTTP service, first bare, then behind palisade.

USAGE:
    cargo run --release --example demo -- [OPTIONS]

Without --load, serves until Ctrl-C while a loopback client sends a little
traffic so the dashboard moves. With --load SECONDS, runs the same load
twice (bare routes, then protected ones), prints a summary and exits.

OPTIONS:
    --port N                    listen on 127.0.0.1:N [default: 3000, or any free port if busy]
    --load SECONDS              run each phase for SECONDS (1 to 3600), print the summary, exit
    --rate N                    requests per second of the loopback client
                                [default: 300 with --load, 20 without; 0 = no traffic]
    --workers N                 concurrent loopback workers [default: 32]
    --patience-ms N             a worker gives up on an answer after N ms [default: 1000]
    --seed N                    seed of every fault generator [default: 0]

  faults of /api/orders and /api/catalog:
    --error-rate F              share of requests that fail (0 to 1) [default: 0.05]
    --panic-rate F              share of requests whose handler panics [default: 0.02]
    --spike-rate F              share of requests delayed by a latency spike [default: 0.03]
    --spike-ms N                length of a latency spike [default: 1500]

  faults of the dependency behind /api/recommendations:
    --dependency-slow-rate F    share of slow calls [default: 0.3]
    --dependency-slow-ms N      how much longer a slow call takes [default: 2000]
    --dependency-error-rate F   share of calls that fail [default: 0.25]

    -h, --help                  print this help
";

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Run the demo.
    Run(Box<DemoArgs>),
    /// Print [`USAGE`].
    Help,
}

/// The demo's options, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoArgs {
    /// `--port`, when given.
    pub port: Option<u16>,
    /// `--load`: how long each phase runs, when given.
    pub load: Option<Duration>,
    /// `--rate`, when given.
    pub rate: Option<u32>,
    /// `--workers`.
    pub workers: usize,
    /// `--patience-ms`.
    pub patience: Duration,
    /// The faults and protection, with the fault flags applied.
    pub config: DemoConfig,
}

impl DemoArgs {
    /// The load of one `--load` phase.
    pub fn load_plan(&self) -> Option<LoadPlan> {
        let duration = self.load?;
        Some(LoadPlan {
            duration,
            workers: self.workers,
            rate: self.rate.unwrap_or(LoadPlan::default().rate),
            patience: self.patience,
        })
    }

    /// The background traffic while serving without `--load`, if any.
    pub fn background_plan(&self) -> Option<LoadPlan> {
        let rate = self.rate.unwrap_or(DEFAULT_SERVE_RATE);
        (rate > 0).then_some(LoadPlan {
            duration: Duration::MAX,
            workers: self.workers.min(rate as usize).max(1),
            rate,
            patience: self.patience,
        })
    }
}

/// A command line the demo cannot run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgsError(String);

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgsError {}

fn error(message: impl Into<String>) -> ArgsError {
    ArgsError(message.into())
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, ArgsError> {
    value
        .parse()
        .map_err(|_| error(format!("{flag}: `{value}` is not a valid number")))
}

fn share(flag: &str, value: &str) -> Result<f64, ArgsError> {
    let share: f64 = number(flag, value)?;
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err(error(format!("{flag}: {value} is not between 0 and 1")))
    }
}

fn millis(flag: &str, value: &str, max: u64) -> Result<Duration, ArgsError> {
    let ms: u64 = number(flag, value)?;
    if ms <= max {
        Ok(Duration::from_millis(ms))
    } else {
        Err(error(format!("{flag}: {value} is more than {max} ms")))
    }
}

/// Parses the demo's arguments (without the program name).
///
/// Flags take their value as the next argument or after `=`.
///
/// # Errors
///
/// An unknown flag, a missing or malformed value, or a value out of range,
/// with a message naming the flag.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, ArgsError> {
    let mut parsed = DemoArgs {
        port: None,
        load: None,
        rate: None,
        workers: LoadPlan::default().workers,
        patience: LoadPlan::default().patience,
        config: DemoConfig::default(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if !flag.starts_with("--") {
            return Err(error(format!("unexpected argument `{flag}` (see --help)")));
        }
        let value = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(error(format!("{flag} needs a value"))),
        };
        let config = &mut parsed.config;
        match flag.as_str() {
            "--port" => parsed.port = Some(number(&flag, &value)?),
            "--load" => {
                let seconds: u64 = number(&flag, &value)?;
                if !(1..=3600).contains(&seconds) {
                    return Err(error(format!("{flag}: {value} is not between 1 and 3600")));
                }
                parsed.load = Some(Duration::from_secs(seconds));
            }
            "--rate" => {
                let rate: u32 = number(&flag, &value)?;
                if rate > 100_000 {
                    return Err(error(format!("{flag}: {value} is more than 100000")));
                }
                parsed.rate = Some(rate);
            }
            "--workers" => {
                let workers: usize = number(&flag, &value)?;
                if !(1..=1024).contains(&workers) {
                    return Err(error(format!("{flag}: {value} is not between 1 and 1024")));
                }
                parsed.workers = workers;
            }
            "--patience-ms" => {
                parsed.patience = millis(&flag, &value, 60_000)?;
                if parsed.patience.is_zero() {
                    return Err(error(format!("{flag}: must be more than 0")));
                }
            }
            "--seed" => config.seed = number(&flag, &value)?,
            "--error-rate" => {
                let rate = share(&flag, &value)?;
                config.orders.error_rate = rate;
                config.catalog.error_rate = rate;
            }
            "--panic-rate" => {
                let rate = share(&flag, &value)?;
                config.orders.panic_rate = rate;
                config.catalog.panic_rate = rate;
            }
            "--spike-rate" => {
                let rate = share(&flag, &value)?;
                config.orders.spike_rate = rate;
                config.catalog.spike_rate = rate;
            }
            "--spike-ms" => {
                let spike = millis(&flag, &value, 60_000)?;
                config.orders.spike = spike;
                config.catalog.spike = spike;
            }
            "--dependency-slow-rate" => config.dependency.slow_rate = share(&flag, &value)?,
            "--dependency-slow-ms" => config.dependency.slow = millis(&flag, &value, 60_000)?,
            "--dependency-error-rate" => config.dependency.error_rate = share(&flag, &value)?,
            _ => return Err(error(format!("unknown flag {flag} (see --help)"))),
        }
    }
    if parsed.load.is_some() && parsed.rate == Some(0) {
        return Err(error("--rate: a load needs at least 1 request per second"));
    }
    let orders = &parsed.config.orders;
    if orders.error_rate + orders.panic_rate > 1.0 {
        return Err(error(
            "--error-rate and --panic-rate add up to more than 1 (a request gets at most one)",
        ));
    }
    Ok(Command::Run(Box::new(parsed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<DemoArgs, ArgsError> {
        match parse(args.iter().map(|a| (*a).to_owned()))? {
            Command::Run(args) => Ok(*args),
            Command::Help => panic!("expected a run"),
        }
    }

    #[test]
    fn defaults_serve_on_port_3000_with_light_traffic() {
        let args = run(&[]).unwrap();
        assert_eq!(args.port, None);
        assert_eq!(args.load_plan(), None);
        let background = args.background_plan().unwrap();
        assert_eq!(background.rate, DEFAULT_SERVE_RATE);
        assert_eq!(background.workers, 20);
        assert_eq!(args.config, DemoConfig::default());
    }

    #[test]
    fn load_and_faults_are_applied() {
        let args = run(&[
            "--load",
            "10",
            "--rate=500",
            "--port",
            "0",
            "--error-rate",
            "0.5",
            "--dependency-slow-ms",
            "100",
        ])
        .unwrap();
        let plan = args.load_plan().unwrap();
        assert_eq!(plan.duration, Duration::from_secs(10));
        assert_eq!(plan.rate, 500);
        assert_eq!(args.port, Some(0));
        assert_eq!(args.config.orders.error_rate, 0.5);
        assert_eq!(args.config.catalog.error_rate, 0.5);
        assert_eq!(args.config.dependency.slow, Duration::from_millis(100));
    }

    #[test]
    fn rate_zero_means_no_background_traffic() {
        assert_eq!(run(&["--rate", "0"]).unwrap().background_plan(), None);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let cases: [(&[&str], &str); 7] = [
            (
                &["--rate", "0", "--load", "5"],
                "--rate: a load needs at least 1 request per second",
            ),
            (
                &["--error-rate", "1.5"],
                "--error-rate: 1.5 is not between 0 and 1",
            ),
            (&["--load", "0"], "--load: 0 is not between 1 and 3600"),
            (&["--port", "http"], "--port: `http` is not a valid number"),
            (&["--load"], "--load needs a value"),
            (&["--colour", "red"], "unknown flag --colour (see --help)"),
            (
                &["--error-rate", "0.6", "--panic-rate", "0.6"],
                "--error-rate and --panic-rate add up to more than 1 (a request gets at most one)",
            ),
        ];
        for (args, message) in cases {
            assert_eq!(run(args).unwrap_err().to_string(), message, "{args:?}");
        }
    }

    #[test]
    fn help_wins() {
        assert_eq!(
            parse(["--load".to_owned(), "5".to_owned(), "--help".to_owned()]).unwrap(),
            Command::Help
        );
    }
}
