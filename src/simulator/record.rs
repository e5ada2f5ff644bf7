//! The record file (`issuer-sim --record`): one JSON line per message the
//! simulator received over TCP and what it did with it, so whole-process tests
//! can check afterwards what reached the issuer. A line reaches the file (the
//! OS, not the disk) before its answer reaches the socket.
//!
//! One writer thread owns the file and writes whatever lines are queued in
//! one `write`, then publishes how many lines are in the file. A connection
//! notes the number of each line it queues and, before it writes answers,
//! waits until the file holds the last of theirs.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use super::{Decision, Effect};
use crate::iso8583::fields::mask_pan;
use crate::iso8583::Message;

/// The number of a line in the record, from 1; 0 stands for no line.
pub(crate) type LineNo = u64;

/// Bytes written in one go at most; more queued lines wait for the next write.
const BATCH_BYTES: usize = 256 * 1024;

/// Appends lines to the record file through its writer thread.
pub(crate) struct Recorder {
    queue: Mutex<Queue>,
    in_file: watch::Receiver<LineNo>,
    writer: Option<JoinHandle<()>>,
}

/// Numbering and queueing under one lock, so line numbers follow the order
/// in which the writer thread receives the lines.
struct Queue {
    queued: LineNo,
    lines: Option<mpsc::Sender<Vec<u8>>>,
}

impl Recorder {
    /// Opens `path` for appending (creating it) and starts the writer thread.
    pub(crate) fn open(path: &Path) -> io::Result<Recorder> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (lines, queued) = mpsc::channel();
        let (in_file_tx, in_file) = watch::channel(0);
        let path = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("sim-record".to_owned())
            .spawn(move || write_lines(file, &path, &queued, &in_file_tx))?;
        Ok(Recorder {
            queue: Mutex::new(Queue {
                queued: 0,
                lines: Some(lines),
            }),
            in_file,
            writer: Some(writer),
        })
    }

    /// Queues one line (without its newline) and returns its number.
    pub(crate) fn append(&self, line: &Line<'_>) -> LineNo {
        let mut text = match serde_json::to_vec(line) {
            Ok(text) => text,
            Err(error) => {
                // Only strings and numbers: cannot happen, but never panic here.
                tracing::error!(%error, "simulator: record line not serialised");
                return 0;
            }
        };
        text.push(b'\n');
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(lines) = &queue.lines else { return 0 };
        if lines.send(text).is_err() {
            // The writer thread is gone (it only ends when the sender drops).
            return 0;
        }
        queue.queued += 1;
        queue.queued
    }

    /// Follows how many lines are in the file; see [`written`].
    pub(crate) fn progress(&self) -> watch::Receiver<LineNo> {
        self.in_file.clone()
    }
}

impl Drop for Recorder {
    /// Writes what is still queued before the simulator ends.
    fn drop(&mut self) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lines
            .take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("simulator: record writer thread panicked");
            }
        }
    }
}

/// Waits until the file holds line `line` (at once for 0 or without a record).
pub(crate) async fn written(progress: Option<&mut watch::Receiver<LineNo>>, line: LineNo) {
    if let (Some(progress), true) = (progress, line > 0) {
        // An error means the writer thread ended: nothing more will come.
        let _ = progress.wait_for(|&in_file| in_file >= line).await;
    }
}

fn write_lines(
    mut file: File,
    path: &Path,
    queued: &mpsc::Receiver<Vec<u8>>,
    in_file: &watch::Sender<LineNo>,
) {
    let mut total: LineNo = 0;
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut failing = false;
    while let Ok(line) = queued.recv() {
        batch.clear();
        batch.extend_from_slice(&line);
        let mut lines = 1;
        while batch.len() < BATCH_BYTES {
            match queued.try_recv() {
                Ok(line) => {
                    batch.extend_from_slice(&line);
                    lines += 1;
                }
                Err(_) => break,
            }
        }
        // Answers wait on these lines; a file that fails is reported once and
        // the answers go on, so recording never changes what the issuer does.
        match file.write_all(&batch) {
            Ok(()) => failing = false,
            Err(error) if !failing => {
                tracing::error!(path = %path.display(), %error, "simulator: record not written");
                failing = true;
            }
            Err(_) => {}
        }
        total += lines;
        in_file.send_replace(total);
    }
}

/// What became of a message, as the record's `answer` says it.
pub(crate) enum Answered<'a> {
    /// The field 39 sent.
    Code(&'a str),
    /// Nothing was sent (a `drop`, an unsolicited response, an answer that
    /// could not be encoded, a frame that did not decode).
    Drop,
    Close,
}

impl<'a> Answered<'a> {
    pub(crate) fn of(decision: &'a Decision) -> Answered<'a> {
        match decision {
            Decision::Respond { response, .. } => match response.get_str(39) {
                Some(code) => Answered::Code(code),
                None => Answered::Drop,
            },
            Decision::Drop => Answered::Drop,
            Decision::Close => Answered::Close,
        }
    }

    fn as_str(&self) -> &'a str {
        match self {
            Answered::Code(code) => code,
            Answered::Drop => "drop",
            Answered::Close => "close",
        }
    }
}

/// One line of the record. Fields the message lacks (or that are not text)
/// are omitted, never null.
#[derive(Debug, Serialize)]
pub(crate) struct Line<'a> {
    /// Milliseconds since the Unix epoch when the message was decided.
    at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    mti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stan: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rrn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    terminal: Option<&'a str>,
    /// Masked: first six and last four digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pan: Option<String>,
    /// Field 4 in minor units.
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<u64>,
    /// Field 7.
    #[serde(skip_serializing_if = "Option::is_none")]
    transmission: Option<&'a str>,
    answer: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    /// From field 90, on reversals that carry one.
    #[serde(skip_serializing_if = "Option::is_none")]
    original_mti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_stan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_transmission: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reversal: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advice: Option<bool>,
    /// On advices: whether it repeated one already received.
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    undecodable: Option<bool>,
}

impl<'a> Line<'a> {
    /// The line for a decoded `request` and what the simulator did with it.
    pub(crate) fn of(request: &'a Message, answered: &Answered<'a>, effect: Effect) -> Line<'a> {
        let mut line = Line {
            mti: Some(request.mti().to_string()),
            stan: request.get_str(11),
            rrn: request.get_str(37),
            terminal: request.get_str(41),
            pan: request.get_str(2).map(mask_pan),
            amount: request.amount().ok().map(|amount| amount.0),
            transmission: request.get_str(7),
            answer: answered.as_str(),
            ..Line::blank()
        };
        match effect {
            Effect::None => {}
            Effect::Reversal(outcome) => {
                if let Ok(original) = request.original_data() {
                    line.original_mti = Some(original.mti.to_string());
                    line.original_stan = Some(original.stan.to_string());
                    line.original_transmission =
                        Some(original.transmission_time.as_str().to_owned());
                }
                line.reversal = Some(outcome.as_str());
            }
            Effect::Advice(outcome) => {
                line.advice = Some(true);
                line.duplicate = Some(outcome == super::AdviceOutcome::Duplicate);
            }
        }
        line
    }

    /// The line for a frame that did not decode: it was not answered.
    pub(crate) fn undecodable() -> Line<'static> {
        Line {
            undecodable: Some(true),
            ..Line::blank()
        }
    }

    /// Notes that the answer waits `delay` before it is sent.
    pub(crate) fn delayed(mut self, delay: Option<std::time::Duration>) -> Line<'a> {
        self.delay_ms = delay.map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self
    }

    fn blank() -> Line<'a> {
        Line {
            at_ms: now_ms(),
            mti: None,
            stan: None,
            rrn: None,
            terminal: None,
            pan: None,
            amount: None,
            transmission: None,
            answer: Answered::Drop.as_str(),
            delay_ms: None,
            original_mti: None,
            original_stan: None,
            original_transmission: None,
            reversal: None,
            advice: None,
            duplicate: None,
            undecodable: None,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A record that cannot be opened, named by its path.
#[derive(Debug, thiserror::Error)]
#[error("simulator cannot open its record file {}: {source}", path.display())]
pub struct RecordError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn message(mti: &str, fields: &[(u8, &str)]) -> Message {
        let mut message = Message::new(mti.parse().expect("valid MTI"));
        for (n, v) in fields {
            message.set(*n, v).expect("data field");
        }
        message
    }

    fn json(line: &Line<'_>) -> serde_json::Value {
        serde_json::to_value(line).expect("serialises")
    }

    #[test]
    fn a_request_line_names_its_fields_masks_the_pan_and_omits_what_is_absent() {
        let request = message(
            "0100",
            &[
                (2, "4111111111111111"),
                (4, "000000001000"),
                (7, "1207181500"),
                (11, "000123"),
                (41, "TERM0001"),
            ],
        );
        let mut value = json(&Line::of(&request, &Answered::Code("00"), Effect::None));
        assert!(value["at_ms"].as_u64().is_some_and(|ms| ms > 0));
        value.as_object_mut().expect("object").remove("at_ms");
        assert_eq!(
            value,
            serde_json::json!({
                "mti": "0100", "stan": "000123", "terminal": "TERM0001",
                "pan": "411111******1111", "amount": 1000,
                "transmission": "1207181500", "answer": "00",
            })
        );
    }

    #[test]
    fn a_reversal_line_carries_field_90_and_its_outcome() {
        let original = format!("0100000123{}{}", "1207181500", "0".repeat(22));
        let reversal = message("0401", &[(11, "000777"), (90, &original)]);
        let line = Line::of(
            &reversal,
            &Answered::Code("00"),
            Effect::Reversal(super::super::ReversalOutcome::Duplicate),
        );
        let value = json(&line);
        assert_eq!(value["original_mti"], "0100");
        assert_eq!(value["original_stan"], "000123");
        assert_eq!(value["original_transmission"], "1207181500");
        assert_eq!(value["reversal"], "duplicate");
        assert!(value.get("advice").is_none());
    }

    #[test]
    fn an_advice_line_says_whether_it_was_a_duplicate() {
        let advice = message("0121", &[(11, "000001")]);
        let value = json(
            &Line::of(
                &advice,
                &Answered::Code("00"),
                Effect::Advice(super::super::AdviceOutcome::Duplicate),
            )
            .delayed(Some(Duration::from_millis(250))),
        );
        assert_eq!(value["advice"], true);
        assert_eq!(value["duplicate"], true);
        assert_eq!(value["delay_ms"], 250);
        assert!(value.get("reversal").is_none());
        let dropped = json(&Line::of(&advice, &Answered::Drop, Effect::None));
        assert_eq!(dropped["answer"], "drop");
        assert_eq!(json(&Line::undecodable())["undecodable"], true);
        let closed = Decision::Close;
        assert_eq!(Answered::of(&closed).as_str(), "close");
    }

    #[tokio::test]
    async fn lines_are_in_the_file_whole_and_in_order_once_written_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("record.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").expect("pre-existing line");
        let recorder = Recorder::open(&path).expect("opens");
        let mut progress = recorder.progress();
        let request = message("0800", &[(11, "000001"), (70, "301")]);
        let mut last = 0;
        for _ in 0..100 {
            last = recorder.append(&Line::of(&request, &Answered::Code("00"), Effect::None));
        }
        assert_eq!(last, 100);
        tokio::time::timeout(Duration::from_secs(10), written(Some(&mut progress), last))
            .await
            .expect("the writer catches up");
        let text = std::fs::read_to_string(&path).expect("readable");
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 101, "appended after the existing line");
        assert_eq!(lines[0], "{\"earlier\":true}");
        for line in &lines[1..] {
            let value: serde_json::Value = serde_json::from_str(line).expect("whole JSON");
            assert_eq!(value["stan"], "000001");
        }
        drop(recorder);
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("no-such-dir").join("record.jsonl");
        assert!(Recorder::open(&missing).is_err());
    }
}
