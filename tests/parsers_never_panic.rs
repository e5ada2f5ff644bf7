//! Every parser that reads bytes from outside — terminal framing, the config
//! file, the jPOS XML and moov JSON spec importers, the risk hotlist — is fed
//! random input and valid input with a few bytes changed. None may panic; what
//! they refuse, they refuse with an error that says where (the origin, and a
//! line, field or byte offset). These are the CI twins of the `fuzz/` targets.
//! Runs are seeded, so a failure reproduces on every run.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use isoswitch::config::Config;
use isoswitch::frame::{decode_one, FrameCodec, FrameConfig, FrameError, LengthHeader};
use isoswitch::iso8583::import::{from_bytes, from_jpos_xml, from_moov_json};
use isoswitch::risk::{RiskRules, RiskState};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRng, TestRunner};
use tokio_util::codec::Decoder;

/// Cases per property: small enough for a debug build to run the file in a
/// few seconds.
const CASES: u32 = 256;

/// The origin every parser is given, so errors can be checked to name it.
const ORIGIN: &str = "hostile-input";

/// Runs `test` on `CASES` values of `strategy` with a fixed seed and no
/// regression files, naming the property on failure.
fn check<S: Strategy>(
    property: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = RunnerConfig {
        cases: CASES,
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{property}: {e}");
    }
}

fn fixture(relative: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One edit of a seed: replace, insert or delete the byte at a position.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, u8),
    Insert(Index, u8),
    Delete(Index),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
    ];
    vec(edit, 1..6)
}

/// `seed` with `edits` applied and cut at `cut` (when given).
fn mutated(seed: &[u8], edits: &[Edit], cut: Option<Index>) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for edit in edits {
        match *edit {
            Edit::Replace(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] = b;
            }
            Edit::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.insert(at, b);
            }
            Edit::Delete(i) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes.remove(at);
            }
            _ => {}
        }
    }
    if let Some(cut) = cut {
        let at = cut.index(bytes.len() + 1);
        bytes.truncate(at);
    }
    bytes
}

/// Random bytes, or a mutation of one of `seeds`.
fn hostile(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..512),
        (
            proptest::sample::select(seeds),
            edits(),
            proptest::option::of(any::<Index>())
        )
            .prop_map(|(seed, edits, cut)| mutated(&seed, &edits, cut)),
    ]
}

/// The longest run of ASCII digits in `text`: an error that shows 12 or more
/// may be showing a card number in clear.
fn longest_digit_run(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

// ---------------------------------------------------------------- framing

/// Every framing a listener or link can have, with a small frame limit so
/// random headers reach both sides of it.
fn frame_configs() -> Vec<FrameConfig> {
    let mut configs = Vec::new();
    for header in [
        LengthHeader::Binary2,
        LengthHeader::Binary4,
        LengthHeader::Ascii2,
        LengthHeader::Ascii4,
    ] {
        for header_includes_self in [false, true] {
            for tpdu in [false, true] {
                configs.push(FrameConfig {
                    header,
                    header_includes_self,
                    tpdu,
                    max_frame_len: 64,
                });
            }
        }
    }
    configs
}

/// A stream of a few well-formed frames under `config`, to mutate.
fn valid_stream(config: &FrameConfig) -> Vec<u8> {
    let mut out = Vec::new();
    for payload in [&b"0800"[..], b"0110 some payload", b"x"] {
        let frame = match config.tpdu {
            true => isoswitch::frame::Frame::with_tpdu(
                isoswitch::frame::Tpdu([0x60, 0, 1, 0, 2]),
                payload.to_vec(),
            ),
            false => isoswitch::frame::Frame::new(payload.to_vec()),
        };
        let wire = isoswitch::frame::encode_frame(config, &frame)
            .unwrap_or_else(|e| panic!("{config:?}: a sample frame encodes: {e}"));
        out.extend(wire);
    }
    out
}

/// A decoding error names the byte offset of the header it is about, and
/// that offset is inside what was fed.
fn check_frame_error(e: &FrameError, fed: usize) -> Result<(), TestCaseError> {
    let offset = match e {
        FrameError::BadAsciiLength { offset, .. }
        | FrameError::Oversized { offset, .. }
        | FrameError::Undersized { offset, .. }
        | FrameError::Truncated { offset, .. } => *offset,
        other => {
            return Err(TestCaseError::fail(format!(
                "not a decoding error: {other}"
            )))
        }
    };
    prop_assert!(
        offset < fed as u64,
        "offset {offset} past the {fed} bytes fed: {e}"
    );
    prop_assert!(
        e.to_string().contains(&format!("byte offset {offset}")),
        "the message does not say where: {e}"
    );
    Ok(())
}

/// Largest piece a stream is fed in.
const MAX_CHUNK: usize = 40;

#[test]
fn random_and_mutated_streams_never_panic_the_frame_decoder() {
    for config in frame_configs() {
        let strategy = (
            hostile(vec![valid_stream(&config)]),
            vec(1..=MAX_CHUNK, 1..8),
        );
        check(&format!("{config:?}"), strategy, |(input, chunks)| {
            // Fed in uneven chunks, as a socket delivers them.
            let mut codec = FrameCodec::new(config);
            let mut buf = BytesMut::new();
            let mut fed = 0;
            let mut sizes = chunks.iter().cycle();
            while fed < input.len() {
                let take = (*sizes.next().unwrap_or(&1)).min(input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + take]);
                fed += take;
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(frame)) => {
                            let len = frame.payload.len();
                            prop_assert!(len >= 1, "an empty frame was returned");
                            prop_assert!(len <= config.max_frame_len);
                        }
                        Ok(None) => {
                            // What the decoder reserved while waiting is
                            // bounded by the frame limit, not by the header:
                            // the buffer holds at most a frame and a chunk,
                            // and growth by doubling (or a split buffer's
                            // reallocation) may take four times that.
                            let bound = 4 * (config.max_frame_len + MAX_CHUNK);
                            prop_assert!(
                                buf.capacity() <= bound,
                                "{} bytes reserved for a {}-byte limit",
                                buf.capacity(),
                                config.max_frame_len
                            );
                            break;
                        }
                        Err(e) => return check_frame_error(&e, fed),
                    }
                }
            }
            match codec.decode_eof(&mut buf) {
                Ok(_) => {}
                Err(e) => check_frame_error(&e, fed.max(1))?,
            }
            Ok(())
        });
    }
}

#[test]
fn random_and_mutated_bytes_never_panic_decode_one() {
    for config in frame_configs() {
        check(
            &format!("{config:?}"),
            hostile(vec![valid_stream(&config)]),
            |input| {
                match decode_one(&config, &input) {
                    Ok(Some((frame, used))) => {
                        prop_assert!(used <= input.len());
                        prop_assert!(!frame.payload.is_empty());
                        prop_assert!(used <= config.max_frame_len);
                    }
                    Ok(None) => {}
                    Err(e) => check_frame_error(&e, input.len())?,
                }
                Ok(())
            },
        );
    }
}

// ---------------------------------------------------------------- config

fn config_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = ["config/default.toml", "config/example.toml"]
        .iter()
        .map(|p| fixture(p))
        .collect();
    let invalid = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/invalid");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&invalid)
        .unwrap_or_else(|e| panic!("{}: {e}", invalid.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for path in names.iter().take(8) {
        seeds.push(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    }
    seeds
}

#[test]
fn random_and_mutated_config_text_never_panics_and_is_refused_naming_where() {
    check("config", hostile(config_seeds()), |input| {
        let text = String::from_utf8_lossy(&input);
        if let Err(e) = Config::from_toml_str(&text, ORIGIN) {
            let message = e.to_string();
            prop_assert!(message.starts_with(ORIGIN), "no origin: {message}");
            prop_assert!(message.len() > ORIGIN.len() + 2, "says nothing: {message}");
            prop_assert!(
                longest_digit_run(&message) < 12,
                "may show a card number: {message}"
            );
        }
        Ok(())
    });
}

// ---------------------------------------------------------------- spec importers

#[test]
fn random_and_mutated_jpos_xml_never_panics_and_is_refused_naming_where() {
    let seeds = vec![
        fixture("tests/fixtures/specs/jpos-iso87ascii.xml"),
        fixture("tests/fixtures/specs/jpos-iso87bcd.xml"),
    ];
    check("jPOS XML", hostile(seeds), |input| {
        let text = String::from_utf8_lossy(&input);
        if let Err(e) = from_jpos_xml(&text, ORIGIN) {
            let message = e.to_string();
            prop_assert!(message.starts_with(ORIGIN), "no origin: {message}");
            prop_assert!(message.len() > ORIGIN.len() + 2, "says nothing: {message}");
        }
        Ok(())
    });
}

#[test]
fn random_and_mutated_moov_json_never_panics_and_is_refused_naming_where() {
    let seeds = vec![fixture("tests/fixtures/specs/moov-spec87.json")];
    check("moov JSON", hostile(seeds), |input| {
        let text = String::from_utf8_lossy(&input);
        if let Err(e) = from_moov_json(&text, ORIGIN) {
            let message = e.to_string();
            prop_assert!(message.starts_with(ORIGIN), "no origin: {message}");
            prop_assert!(message.len() > ORIGIN.len() + 2, "says nothing: {message}");
        }
        Ok(())
    });
}

#[test]
fn random_and_mutated_spec_file_bytes_never_panic_and_every_problem_names_where() {
    let seeds = vec![
        fixture("tests/fixtures/specs/jpos-classes.xml"),
        fixture("tests/fixtures/specs/jpos-problems.xml"),
        fixture("tests/fixtures/specs/moov-hex-track2.json"),
        fixture("tests/fixtures/specs/moov-field000.json"),
    ];
    check("spec file bytes", hostile(seeds), |input| {
        match from_bytes(&input, ORIGIN) {
            Ok(imported) => {
                for warning in &imported.warnings {
                    let line = warning.to_string();
                    prop_assert!(line.starts_with(ORIGIN), "no origin: {line}");
                    prop_assert!(!line.contains('\n'), "one line: {line}");
                }
            }
            Err(failed) => {
                prop_assert!(!failed.problems.is_empty(), "a failure names a problem");
                for problem in &failed.problems {
                    let line = problem.to_string();
                    prop_assert!(line.starts_with(ORIGIN), "no origin: {line}");
                    prop_assert!(line.len() > ORIGIN.len() + 2, "says nothing: {line}");
                }
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------- hotlist

/// Lines that look like hotlist entries, good and bad, so random input gets
/// past the first line.
fn hotlist_lines() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "[0-9]{1,20}[ ,]{1,2}(lost|stolen|restricted|LOST|gone|[0-9]{2})",
        "[0-9]{1,6}-[0-9]{1,7} (lost|restricted)",
        "[0-9 ]{0,24}(#.*)?",
        ".{0,30}",
    ];
    vec(line, 0..12).prop_map(|lines| lines.join("\n").into_bytes())
}

#[test]
fn random_and_mutated_hotlists_never_panic_and_are_refused_naming_the_line() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("hotlist.txt");
    let config_text = format!(
        "[[risk.rule]]\nname = \"hot\"\nkind = \"hotlist\"\nfile = {:?}\n",
        path.display().to_string()
    );
    let config = Config::from_toml_str(&config_text, ORIGIN).expect("a hotlist rule loads");
    let seeds = vec![fixture("tests/fixtures/risk/hotlist.txt")];
    let strategy = prop_oneof![hostile(seeds), hotlist_lines()];
    check("hotlist", strategy, |input| {
        std::fs::write(&path, &input).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Err(e) = RiskRules::compile(&config.risk, &RiskState::new()) {
            let message = e.to_string();
            let lines = input.split(|&b| b == b'\n').count();
            let named = (1..=lines.max(1)).any(|n| message.contains(&format!("hotlist.txt:{n}:")));
            // Not UTF-8 is the one refusal of the whole file, not of a line.
            let unreadable = std::str::from_utf8(&input).is_err();
            prop_assert!(
                named || (unreadable && message.contains("cannot read")),
                "does not name the line: {message}"
            );
            prop_assert!(
                longest_digit_run(&message) < 12,
                "may show a card number: {message}"
            );
        }
        Ok(())
    });
}
