//! A spinner on standard error while the client waits (`submit --wait`, `watch`, `eval`).
//!
//! It shows only when both standard output and standard error are terminals: piped, redirected
//! or run by a script, the client prints exactly what it printed before, nothing more. Lines
//! printed while it spins go through [`Progress::println`], so they never mix with it.

use std::{borrow::Cow, io::IsTerminal, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the spinner turns.
const TICK: Duration = Duration::from_millis(120);

/// A spinner with a message and the time waited so far; cleared when dropped.
#[derive(Debug)]
pub(crate) struct Progress {
    /// The spinner, or a hidden one off a terminal.
    bar: ProgressBar,
}

// === impl Progress ===

impl Progress {
    /// Starts a spinner saying `message`, if the client runs on a terminal.
    pub(crate) fn spinner(message: impl Into<Cow<'static, str>>) -> Self {
        if !(std::io::stdout().is_terminal() && std::io::stderr().is_terminal()) {
            return Self {
                bar: ProgressBar::hidden(),
            };
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message);
        bar.enable_steady_tick(TICK);
        Self { bar }
    }

    /// Changes what the spinner says.
    pub(crate) fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        self.bar.set_message(message);
    }

    /// Runs `print` (which prints whole lines) with the spinner out of the way.
    pub(crate) fn println(&self, print: impl FnOnce()) {
        self.bar.suspend(print);
    }

    /// Removes the spinner, before the final output or an error.
    pub(crate) fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
