//! Progress bars on stderr (indicatif), drawn only when stderr is a
//! terminal, so logs and pipes get the plain per-epoch lines alone.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A training epoch: samples done, samples/s and the running mean loss
/// (the bar's message).
pub const EPOCH: &str = "  epoch {prefix} [{bar:30}] {pos}/{len} samples  {per_sec}  loss {msg}";
/// The CIFAR-10 download: bytes done of the archive's size.
pub const DOWNLOAD: &str = "  CIFAR-10 [{bar:30}] {bytes}/{total_bytes}  {bytes_per_sec}  {eta}";

/// A bar of `len` steps drawn with `template`, hidden when stderr is not a
/// terminal or `shown` is false (a data-parallel run's ranks but the first).
pub fn bar(len: u64, template: &str, shown: bool) -> ProgressBar {
    let target = if shown && std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    // The templates are this module's constants, checked by the test below.
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("#>.");
    ProgressBar::with_draw_target(Some(len), target).with_style(style)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for t in [EPOCH, DOWNLOAD] {
            ProgressStyle::with_template(t).unwrap();
        }
    }

    #[test]
    fn bars_are_hidden_off_a_terminal_or_when_not_shown() {
        // `cargo test` captures stderr through a pipe.
        if !std::io::stderr().is_terminal() {
            assert!(bar(10, EPOCH, true).is_hidden());
        }
        assert!(bar(10, EPOCH, false).is_hidden());
    }
}
