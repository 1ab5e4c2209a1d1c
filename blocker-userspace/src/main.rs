//! The `blocker` command: daemon (`run`) and CLI (`stats`, `detach`).
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use std::process::ExitCode;

use cli::args::{run_options_given, Cli, Command};

mod cli;

fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    let given_with_config = run_options_given(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if !matches!(cli.command, Command::Run(_)) {
        // `blocker regions list | head` should end quietly, as other CLI tools do.
        // SAFETY: restoring the default disposition of a signal.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    init_logging(&cli);
    match cli::commands::run(cli, &given_with_config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blocker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon's logger: env_logger, but for aya's warning that the kernel
/// refused the object's BTF, which it makes of the whole verifier output (a
/// page per program load). The kernel refuses the type names aya-log's types
/// carry (`MaybeUninit<u8>`, aya issue #1490), aya-build always emits BTF, and
/// nothing blocker loads needs it: the warning becomes one line, once, at
/// debug level, whatever RUST_LOG asks.
struct Logger {
    inner: env_logger::Logger,
    btf_said: std::sync::atomic::AtomicBool,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let refused_btf = record.target().starts_with("aya")
            && record.level() == log::Level::Warn
            && record.args().to_string().starts_with("object BTF couldn't be loaded");
        if !refused_btf {
            return self.inner.log(record);
        }
        if self.btf_said.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        self.inner.log(
            &log::Record::builder()
                .level(log::Level::Debug)
                .target(record.target())
                .args(format_args!(
                    "the kernel refused the eBPF object's BTF (aya-log's type names); blocker needs none of it"
                ))
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

fn init_logging(cli: &Cli) {
    // aya::bpf=error: see `Logger` (RUST_LOG replaces this default; `Logger`
    // still keeps aya's BTF warning to one debug line).
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,aya::bpf=error"));
    if let Some(level) = match &cli.command {
        Command::Run(args) if args.ebpf_log_level > 0 => Some(args.ebpf_log_level),
        _ => None,
    } {
        // Let the records the program was loaded to emit through.
        let filter = ["off", "error", "warn", "info", "debug", "trace"][usize::from(level)];
        builder.parse_filters(&format!("{}={filter}", blocker_common::EBPF_LOG_TARGET));
    }
    if stderr_is_journal() {
        // journald stamps and ranks each line itself: "<N>" is the syslog priority
        // prefix it understands (sd-daemon(3)), so `journalctl -p warning` works.
        builder.format(|buf, record| {
            use std::io::Write as _;
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{priority}>{}", record.args())
        });
    } else {
        builder.format_timestamp_secs().format_target(false);
    }
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Logger { inner, btf_said: Default::default() })).is_ok() {
        log::set_max_level(max);
    }
}

/// Whether stderr is connected to the journal: systemd sets JOURNAL_STREAM to the
/// "device:inode" of the stream it gives the service (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd as _;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Ok(file) = std::io::stderr().as_fd().try_clone_to_owned().map(std::fs::File::from) else { return false };
    let Ok(meta) = file.metadata() else { return false };
    use std::os::unix::fs::MetadataExt as _;
    value.to_str() == Some(format!("{}:{}", meta.dev(), meta.ino()).as_str())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
