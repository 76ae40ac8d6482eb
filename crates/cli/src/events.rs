//! Prints the FT roles' typed events (`ftvm_ft::event`) on stderr: a human line
//! (`ftvm backup: [t=<unix ms>] live as generation 2 ...`) by default, or one JSON object per
//! line (`{"t_ms":..,"process":"backup","event":{"event":"live",..}}`) with `--events json`
//! or `FTVM_EVENTS=json`, for tests and tools that match the variants. Each event also goes
//! to the process's metrics journal (`ftvm_metrics::process_journal`).

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

/// How events are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

impl Format {
    /// `--events` if given, else `FTVM_EVENTS`, else human lines.
    pub fn chosen(flag: Option<Format>) -> Format {
        flag.unwrap_or_else(|| match std::env::var("FTVM_EVENTS").as_deref() {
            Ok("json") => Format::Json,
            _ => Format::Human,
        })
    }
}

/// Installs the printer for this process (`process`: `primary` or `backup`).
pub fn install(process: &'static str, format: Format) {
    let subscriber = Registry::default().with(Printer {
        process,
        format,
        out: Box::new(|line| eprintln!("{line}")),
    });
    // A second install (never done) would keep the first printer.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

struct Printer {
    process: &'static str,
    format: Format,
    out: Box<dyn Fn(&str) + Send + Sync>,
}

#[derive(Default)]
struct Fields {
    message: String,
    json: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else if field.name() == ftvm_ft::event::JSON_FIELD {
            self.json = Some(text);
        } else {
            let _ = write!(self.message, " {}={text}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Printer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let ms = crate::ft_pair::unix_ms();
        // The metrics count what the log shows: every FT event passes through here.
        if let Some(e) = fields
            .json
            .as_deref()
            .and_then(|j| serde_json::from_str::<ftvm_ft::Event>(j).ok())
        {
            ftvm_metrics::process_journal().record(ms as u64, &e);
        }
        let line = match (self.format, fields.json) {
            (Format::Human, _) => format!("ftvm {}: [t={ms}] {}", self.process, fields.message),
            // The fields of `ftvm_ft::event::Line`, the event's JSON as it came.
            (Format::Json, Some(json)) => {
                format!(
                    r#"{{"t_ms":{ms},"process":"{}","event":{json}}}"#,
                    self.process
                )
            }
            // Not an FT event: its message, still one JSON object.
            (Format::Json, None) => serde_json::json!({
                "t_ms": ms as u64, "process": self.process, "message": fields.message
            })
            .to_string(),
        };
        (self.out)(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftvm_ft::event::{Event, Line};
    use std::sync::{Arc, Mutex};

    fn printed(format: Format, event: Event) -> String {
        let lines = Arc::new(Mutex::new(String::new()));
        let sink = lines.clone();
        let printer = Printer {
            process: "backup",
            format,
            out: Box::new(move |l| {
                let mut s = sink.lock().unwrap();
                s.push_str(l);
                s.push('\n');
            }),
        };
        tracing::subscriber::with_default(Registry::default().with(printer), || {
            ftvm_ft::emit(event)
        });
        lines.lock().unwrap().clone()
    }

    #[test]
    fn json_lines_parse_back_into_the_event_and_human_lines_read_as_before() {
        let live = Event::Live {
            generation: 2,
            icount: 99,
            disks: 1,
            net: None,
            reissued: 1,
            announced: None,
        };
        let json = printed(Format::Json, live.clone());
        let lines = Line::parse_all(&json);
        assert_eq!(lines.len(), 1, "{json}");
        assert_eq!(
            (lines[0].process.as_str(), &lines[0].event),
            ("backup", &live)
        );
        let human = printed(Format::Human, live);
        assert!(human.starts_with("ftvm backup: [t="), "{human}");
        assert!(
            human.contains("] live as generation 2 at instruction 99"),
            "{human}"
        );
    }
}
