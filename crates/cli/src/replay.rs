//! `ballast replay FILE.jsonl [--state OUT.json]`.

use anyhow::{Context, Result};
use ballast_engine::{parse_line, Engine, Event};
use serde::Serialize;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

/// Counts of a replay, reported on stderr at the end.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub accepted: u64,
    pub rejected: u64,
}

pub fn run(file: &Path, state_out: Option<&Path>) -> Result<()> {
    let input = File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    // Create the state file's folder before the replay, so a bad path fails before any work.
    if let Some(dir) = state_out.and_then(Path::parent).filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let stdout = std::io::stdout().lock();
    let mut out = BufWriter::new(stdout);
    let mut engine = Engine::new();
    let summary =
        replay(BufReader::new(input), &mut engine, &mut out).with_context(|| format!("{}", file.display()))?;
    out.flush()?;
    if let Some(path) = state_out {
        let view = engine.view().context("computing the final state")?;
        let json = serde_json::to_vec_pretty(&view)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "replayed {} commands: {} accepted, {} rejected; state hash {}",
        summary.accepted + summary.rejected,
        summary.accepted,
        summary.rejected,
        engine.state_hash()
    );
    Ok(())
}

/// Apply every command of `input` to `engine`, writing one JSON event per line to `out`.
pub fn replay(input: impl BufRead, engine: &mut Engine, out: &mut impl Write) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut events: Vec<Event> = Vec::new();
    for (n, raw) in input.split(b'\n').enumerate() {
        let line_no = n + 1;
        let raw = raw.with_context(|| format!("line {line_no}: read failed"))?;
        let line = std::str::from_utf8(&raw).map_err(|e| anyhow::anyhow!("line {line_no}: not valid UTF-8 ({e})"))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cmd = match parse_line(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                let (ts, cmd) = envelope_of(line);
                write_rejection(out, line_no, ts, cmd.as_deref(), &e.to_string())?;
                summary.rejected += 1;
                continue;
            }
        };
        events.clear();
        match engine.apply(&cmd, &mut events) {
            Ok(()) => {
                summary.accepted += 1;
                for event in &events {
                    write_event(out, engine.seq(), cmd.ts, line_no, event)?;
                }
            }
            Err(reason) => {
                summary.rejected += 1;
                write_rejection(out, line_no, Some(cmd.ts), Some(cmd.cmd.name()), &reason.to_string())?;
            }
        }
    }
    Ok(summary)
}

/// `ts` and `cmd` of a line that did not decode, when they can be read, for the rejection line.
fn envelope_of(line: &str) -> (Option<u64>, Option<String>) {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) else {
        return (None, None);
    };
    (map.get("ts").and_then(|v| v.as_u64()), map.get("cmd").and_then(|v| v.as_str()).map(str::to_string))
}

/// `{"seq":S,"ts":T,"line":N,"event":...}`: the envelope first, then the event's own fields.
fn write_event(out: &mut impl Write, seq: u64, ts: u64, line: usize, event: &Event) -> Result<()> {
    let body = serde_json::to_string(event)?;
    let fields = body.strip_prefix('{').unwrap_or(&body);
    writeln!(out, "{{\"seq\":{seq},\"ts\":{ts},\"line\":{line},{fields}")?;
    Ok(())
}

#[derive(Serialize)]
struct Rejection<'a> {
    line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a str>,
    reason: &'a str,
}

fn write_rejection(out: &mut impl Write, line: usize, ts: Option<u64>, cmd: Option<&str>, reason: &str) -> Result<()> {
    serde_json::to_writer(&mut *out, &Rejection { line, ts, event: "rejected", cmd, reason })?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_text(text: &[u8]) -> (Result<Summary>, String) {
        let mut engine = Engine::new();
        let mut out = Vec::new();
        let r = replay(text, &mut engine, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn keeps_going_after_rejections_and_numbers_lines() {
        let text = b"# a comment\n\n{\"ts\":0,\"cmd\":\"create_market\",\"market\":\"BTC-PERP\",\"initial_margin\":\"0.1\",\"maintenance_margin\":\"0.05\"}\nnot json\n{\"ts\":0,\"cmd\":\"deposit\",\"account\":\"a\",\"asset\":\"USDC\",\"amount\":\"-1\"}\n{\"ts\":0,\"cmd\":\"deposit\",\"account\":\"a\",\"asset\":\"USDC\",\"amount\":\"1\"}\n";
        let (summary, out) = run_text(text);
        assert_eq!(summary.unwrap(), Summary { accepted: 2, rejected: 2 });
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["event"], "market_created");
        assert_eq!(lines[0]["line"], 3);
        assert_eq!(lines[1]["event"], "rejected");
        assert_eq!(lines[1]["line"], 4);
        assert_eq!(lines[2]["cmd"], "deposit");
        assert!(lines[2]["reason"].as_str().unwrap().contains("amount must be positive"));
        assert_eq!(lines[3]["event"], "deposited");
        assert_eq!(lines[3]["seq"], 2);
    }

    #[test]
    fn invalid_utf8_is_an_error_naming_the_line() {
        let (summary, _) = run_text(b"{\"ts\":0,\"cmd\":\"tick\"}\n\xff\xfe\n");
        let e = summary.unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
