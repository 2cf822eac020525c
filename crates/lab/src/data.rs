//! Data files: OHLC bars, funding rates and positions. Every problem is reported with the file,
//! the line and the column, before the run starts.

use crate::error::LabError;
use crate::scenario::GapPolicy;
use crate::time::{format_utc, parse_utc};
use ballast_engine::event::Id;
use rayon::prelude::*;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    pub ts: u64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
}

/// Bars of one file, regular at `granularity_ms`, with the number of bars filled in.
#[derive(Clone, Debug)]
pub struct Bars {
    pub bars: Vec<Bar>,
    pub granularity_ms: u64,
    pub filled: usize,
}

fn reader(path: &Path) -> Result<csv::Reader<std::fs::File>, LabError> {
    let file = std::fs::File::open(path).map_err(|e| LabError::io(path, e))?;
    Ok(csv_reader(file, true))
}

/// Fields are trimmed as they are read (`Cell::text`): csv's own field trimming rebuilds every
/// record, which costs more than parsing it. Without a header the reader accepts rows of any
/// length, for the caller to check against the header it read elsewhere.
fn csv_reader<R: std::io::Read>(from: R, has_headers: bool) -> csv::Reader<R> {
    csv::ReaderBuilder::new().has_headers(has_headers).trim(csv::Trim::Headers).flexible(!has_headers).from_reader(from)
}

fn csv_err(path: &Path, e: csv::Error) -> LabError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    LabError::Data { file: path.display().to_string(), line, column: "-".into(), message: e.to_string() }
}

/// Column indexes of `wanted` in the header; missing required columns are an error naming them.
fn columns(path: &Path, header: &csv::StringRecord, wanted: &[(&str, bool)]) -> Result<Vec<Option<usize>>, LabError> {
    let mut out = Vec::new();
    for (name, required) in wanted {
        let idx = header.iter().position(|h| h.eq_ignore_ascii_case(name));
        if idx.is_none() && *required {
            return Err(LabError::Data {
                file: path.display().to_string(),
                line: 1,
                column: (*name).into(),
                message: format!(
                    "missing column '{name}' (header is '{}'; expected {})",
                    header.iter().collect::<Vec<_>>().join(","),
                    wanted.iter().filter(|w| w.1).map(|w| w.0).collect::<Vec<_>>().join(",")
                ),
            });
        }
        out.push(idx);
    }
    Ok(out)
}

struct Cell<'a> {
    path: &'a Path,
    line: u64,
    record: &'a csv::StringRecord,
    header: &'a csv::StringRecord,
}

impl Cell<'_> {
    fn err(&self, idx: usize, message: String) -> LabError {
        LabError::Data {
            file: self.path.display().to_string(),
            line: self.line,
            column: self.header.get(idx).unwrap_or("?").to_string(),
            message,
        }
    }
    fn text(&self, idx: usize) -> &str {
        self.record.get(idx).unwrap_or("").trim()
    }
    fn float(&self, idx: usize) -> Result<f64, LabError> {
        let t = self.text(idx);
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(self.err(idx, format!("'{t}' is not a number"))),
        }
    }
    fn ts(&self, idx: usize) -> Result<u64, LabError> {
        parse_utc(self.text(idx)).map_err(|e| self.err(idx, e))
    }
}

/// Read OHLC bars (`timestamp_utc,open,high,low,close,volume`; volume may be empty).
pub fn read_bars(path: &Path, gaps: GapPolicy) -> Result<Bars, LabError> {
    let mut rdr = reader(path)?;
    let header = rdr.headers().map_err(|e| csv_err(path, e))?.clone();
    let cols = columns(
        path,
        &header,
        &[("timestamp_utc", true), ("open", true), ("high", true), ("low", true), ("close", true)],
    )?;
    let [t, o, h, l, c] = [cols[0], cols[1], cols[2], cols[3], cols[4]].map(|x| x.unwrap_or_default());
    let mut raw: Vec<(u64, Bar)> = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_err(path, e)),
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let cell = Cell { path, line, record: &record, header: &header };
        let bar = Bar {
            ts: cell.ts(t)?,
            open: cell.float(o)?,
            high: cell.float(h)?,
            low: cell.float(l)?,
            close: cell.float(c)?,
        };
        for (idx, v) in [(o, bar.open), (h, bar.high), (l, bar.low), (c, bar.close)] {
            if v <= 0.0 {
                return Err(cell.err(idx, format!("price {v} is not positive")));
            }
        }
        if bar.low > bar.open.min(bar.close) || bar.high < bar.open.max(bar.close) {
            return Err(cell.err(
                l,
                format!(
                    "inconsistent bar: low {} high {} must bracket open {} and close {}",
                    bar.low, bar.high, bar.open, bar.close
                ),
            ));
        }
        if let Some((prev_line, prev)) = raw.last() {
            if bar.ts <= prev.ts {
                return Err(cell.err(
                    t,
                    format!(
                        "bars out of order: {} is not after {} on line {prev_line}",
                        format_utc(bar.ts),
                        format_utc(prev.ts)
                    ),
                ));
            }
        }
        raw.push((line, bar));
    }
    if raw.len() < 2 {
        return Err(LabError::DataFile { file: path.display().to_string(), message: "needs at least two bars".into() });
    }
    let granularity_ms = raw.windows(2).map(|w| w[1].1.ts - w[0].1.ts).min().unwrap_or(1);
    let mut bars = Vec::with_capacity(raw.len());
    let mut filled = 0;
    for (i, (line, bar)) in raw.iter().enumerate() {
        if i > 0 {
            let prev: Bar = *bars.last().expect("previous bar");
            let gap = bar.ts - prev.ts;
            if !gap.is_multiple_of(granularity_ms) || gap > granularity_ms {
                if gaps == GapPolicy::Refuse || !gap.is_multiple_of(granularity_ms) {
                    return Err(LabError::Data {
                        file: path.display().to_string(),
                        line: *line,
                        column: "timestamp_utc".into(),
                        message: format!(
                            "gap in the bars: {} follows {} but the file's bars are {} s apart ({} missing); \
                             set gaps = \"fill\" on the market's price to repeat the previous close",
                            format_utc(bar.ts),
                            format_utc(prev.ts),
                            granularity_ms / 1000,
                            gap / granularity_ms - 1
                        ),
                    });
                }
                let mut ts = prev.ts + granularity_ms;
                while ts < bar.ts {
                    bars.push(Bar { ts, open: prev.close, high: prev.close, low: prev.close, close: prev.close });
                    filled += 1;
                    ts += granularity_ms;
                }
            }
        }
        bars.push(*bar);
    }
    Ok(Bars { bars, granularity_ms, filled })
}

/// The intra-bar path of a series of bars: per bar, four points at 0, ¼, ½ and ¾ of the bar:
/// open, the extreme nearer to the open, the farther extreme, close. Between points the price
/// is interpolated linearly in time (so the close leads into the next bar's open).
pub fn intrabar_points(bars: &Bars) -> Vec<(u64, f64)> {
    let d = bars.granularity_ms;
    let mut pts = Vec::with_capacity(bars.bars.len() * 4);
    for b in &bars.bars {
        let high_first = match (b.high - b.open).abs().partial_cmp(&(b.open - b.low).abs()) {
            Some(std::cmp::Ordering::Less) => true,
            Some(std::cmp::Ordering::Greater) => false,
            // Equally near: visit first the extreme the bar does not close at.
            _ => b.close <= b.open,
        };
        let (first, second) = if high_first { (b.high, b.low) } else { (b.low, b.high) };
        pts.push((b.ts, b.open));
        pts.push((b.ts + d / 4, first));
        pts.push((b.ts + d / 2, second));
        pts.push((b.ts + 3 * d / 4, b.close));
    }
    pts
}

/// Read realised funding rates (`timestamp_utc,funding_rate`).
pub fn read_funding(path: &Path) -> Result<Vec<(u64, f64)>, LabError> {
    let mut rdr = reader(path)?;
    let header = rdr.headers().map_err(|e| csv_err(path, e))?.clone();
    let cols = columns(path, &header, &[("timestamp_utc", true), ("funding_rate", true)])?;
    let (t, r) = (cols[0].unwrap_or_default(), cols[1].unwrap_or_default());
    let mut out: Vec<(u64, f64)> = Vec::new();
    for rec in rdr.records() {
        let record = rec.map_err(|e| csv_err(path, e))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let cell = Cell { path, line, record: &record, header: &header };
        let ts = cell.ts(t)?;
        let rate = cell.float(r)?;
        if rate.abs() > 0.1 {
            return Err(cell.err(r, format!("funding rate {rate} is beyond ±10% per period")));
        }
        if let Some((prev, _)) = out.last() {
            if ts <= *prev {
                return Err(
                    cell.err(t, format!("rates out of order: {} is not after {}", format_utc(ts), format_utc(*prev)))
                );
            }
        }
        out.push((ts, rate));
    }
    Ok(out)
}

/// One row of a positions file.
#[derive(Clone, Debug)]
pub struct PositionRow {
    pub account: Id,
    pub market: Option<String>,
    pub long: bool,
    pub size: f64,
    pub entry_price: f64,
    pub isolated_margin: f64,
    pub cross_margin: f64,
}

/// Read positions: `account,side,size,entry_price,isolated_margin` plus optional `market` and
/// `cross_margin`. `side` is `long`/`short` (or `buy`/`sell`); an isolated_margin of 0 puts the
/// position in the cross book, which then needs `cross_margin`.
///
/// A file without quotes (every positions file we generate) is cut at line ends into pieces
/// read in parallel: a million rows take about a third less time on two cores than on one
/// (BENCHMARKS.md §6). The rows keep their order, and an error names the same line and column
/// as a reading from the top would (the first piece with an error holds the first bad line).
///
/// The rows come back in file order, in the pieces they were read in: joining the pieces would
/// copy every row once more (a row is 88 bytes by its layout: 88 MB for a million).
pub fn read_positions(path: &Path) -> Result<Vec<Vec<PositionRow>>, LabError> {
    let bytes = std::fs::read(path).map_err(|e| LabError::io(path, e))?;
    let mut rdr = csv_reader(&bytes[..], true);
    let header = rdr.headers().map_err(|e| csv_err(path, e))?.clone();
    let cols = columns(
        path,
        &header,
        &[
            ("account", true),
            ("side", true),
            ("size", true),
            ("entry_price", true),
            ("isolated_margin", true),
            ("market", false),
            ("cross_margin", false),
        ],
    )?;
    // The body starts on the line after the header (past the `\n` of a `\r\n`, which the reader
    // leaves for the next record).
    let mut body_start = usize::try_from(rdr.position().byte()).unwrap_or(bytes.len()).min(bytes.len());
    if bytes.get(body_start) == Some(&b'\n') {
        body_start += 1;
    }
    let (head, body) = bytes.split_at(body_start);
    let pieces = if body.contains(&b'"') { vec![body] } else { split_lines(body, 4 * rayon::current_num_threads()) };
    // The line each piece starts on, and its number of lines.
    let mut lines = Vec::with_capacity(pieces.len());
    let mut line = 1 + newlines(head);
    for piece in &pieces {
        let n = newlines(piece);
        lines.push((line, n));
        line += n;
    }
    let read = |(piece, &(first, n)): (&&[u8], &(u64, u64))| position_rows(path, &header, &cols, piece, first, n);
    let parts: Vec<Result<Vec<PositionRow>, LabError>> = pieces.par_iter().zip(&lines).map(read).collect();
    // In order, so that the error is the first piece's that has one.
    let parts: Vec<Vec<PositionRow>> = parts.into_iter().collect::<Result<_, _>>()?;
    if parts.iter().all(Vec::is_empty) {
        return Err(LabError::DataFile { file: path.display().to_string(), message: "no positions".into() });
    }
    Ok(parts)
}

/// `body` cut into about `n` pieces, each ending at a line end (the last at the end).
fn split_lines(body: &[u8], n: usize) -> Vec<&[u8]> {
    let target = body.len().div_ceil(n.max(1)).max(1);
    let mut pieces = Vec::with_capacity(n);
    let mut rest = body;
    while !rest.is_empty() {
        let cut = match rest.iter().skip(target).position(|&b| b == b'\n') {
            Some(i) => target + i + 1,
            None => rest.len(),
        };
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// The rows of `piece` (records only, no header), which starts on line `first_line` and holds
/// `lines` line ends. Lines are counted here from the records' byte offsets: the reader's own
/// count depends on the line ends (`\r\n` or `\n`).
fn position_rows(
    path: &Path,
    header: &csv::StringRecord,
    cols: &[Option<usize>],
    piece: &[u8],
    first_line: u64,
    lines: u64,
) -> Result<Vec<PositionRow>, LabError> {
    let c = |i: usize| cols[i].unwrap_or_default();
    let mut rdr = csv_reader(piece, false);
    // One row per line (blank lines aside): no growing and copying on the way.
    let mut out = Vec::with_capacity(usize::try_from(lines).unwrap_or(0) + 1);
    // One record reused for every row: a book of 10^6 positions would otherwise allocate as
    // many records.
    let mut record = csv::StringRecord::new();
    // The last byte offset a line was counted to, and its line.
    let mut seen = (0usize, first_line);
    let mut line_at = |position: Option<&csv::Position>| {
        let mut at = position.map_or(seen.0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX));
        // After a `\r\n` the next record's offset is that of its `\n`.
        if piece.get(at) == Some(&b'\n') {
            at += 1;
        }
        let at = at.clamp(seen.0, piece.len());
        seen = (at, seen.1 + newlines(&piece[seen.0..at]));
        seen.1
    };
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = line_at(e.position());
                return Err(LabError::Data {
                    file: path.display().to_string(),
                    line,
                    column: "-".into(),
                    message: e.to_string(),
                });
            }
        }
        let line = line_at(record.position());
        let cell = Cell { path, line, record: &record, header };
        if record.len() != header.len() {
            return Err(LabError::Data {
                file: path.display().to_string(),
                line,
                column: "-".into(),
                message: format!("the row has {} fields and the header {}", record.len(), header.len()),
            });
        }
        let account = Id::from(cell.text(c(0)));
        if account.is_empty() {
            return Err(cell.err(c(0), "empty account id".into()));
        }
        let side = cell.text(c(1));
        let is = |word: &str| side.eq_ignore_ascii_case(word);
        let long = if is("long") || is("buy") {
            true
        } else if is("short") || is("sell") {
            false
        } else {
            return Err(cell.err(c(1), format!("side '{side}' is not long/short/buy/sell")));
        };
        let size = cell.float(c(2))?;
        if size <= 0.0 {
            return Err(cell.err(c(2), format!("size {size} must be > 0 (the side gives the sign)")));
        }
        let entry_price = cell.float(c(3))?;
        if entry_price <= 0.0 {
            return Err(cell.err(c(3), format!("entry_price {entry_price} must be > 0")));
        }
        let isolated_margin = if cell.text(c(4)).is_empty() { 0.0 } else { cell.float(c(4))? };
        if isolated_margin < 0.0 {
            return Err(cell.err(c(4), "isolated_margin must be >= 0".into()));
        }
        let market = cols[5].map(|i| cell.text(i).to_string()).filter(|s| !s.is_empty());
        let cross_margin = match cols[6] {
            Some(i) if !cell.text(i).is_empty() => cell.float(i)?,
            _ => 0.0,
        };
        if isolated_margin == 0.0 && cross_margin <= 0.0 {
            return Err(cell.err(
                c(4),
                "isolated_margin is 0 and no cross_margin is given: the position has no collateral".into(),
            ));
        }
        out.push(PositionRow { account, market, long, size, entry_price, isolated_margin, cross_margin });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rows` positions `p0`, `p1`, ... (row `i` has size `i + 1`), quoted ids or not, with
    /// line ends `end`; the row on line `bad_line` (if any) has a negative margin.
    fn positions_file(name: &str, rows: usize, quoted: bool, end: &str, bad_lines: &[usize]) -> std::path::PathBuf {
        let mut text = format!("account,side,size,entry_price,isolated_margin{end}");
        for i in 0..rows {
            let id = if quoted { format!("\"p{i}\"") } else { format!("p{i}") };
            let margin = if bad_lines.contains(&(i + 2)) { "-1" } else { "100" };
            text.push_str(&format!("{id},long,{},50000,{margin}{end}", i + 1));
        }
        let path = std::env::temp_dir().join(format!("ballast-positions-{}-{name}.csv", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The file is read in pieces (in parallel) unless it has quotes: either way every row comes
    /// back in order, and an error names the line a reading from the top would, whatever the
    /// line ends — also when later pieces have errors of their own.
    #[test]
    fn positions_read_in_pieces_keep_their_order_and_their_line_numbers() {
        for (name, quoted, end) in [("lf", false, "\n"), ("crlf", false, "\r\n"), ("quoted", true, "\r\n")] {
            let rows: Vec<PositionRow> =
                read_positions(&positions_file(name, 3000, quoted, end, &[])).unwrap().into_iter().flatten().collect();
            assert_eq!(rows.len(), 3000, "{name}");
            for (i, row) in rows.iter().enumerate() {
                assert_eq!((row.account.as_str(), row.size), (format!("p{i}").as_str(), (i + 1) as f64), "{name}");
            }
            for bad in [&[2][..], &[1700], &[3001], &[2, 3001], &[1700, 2500, 2999]] {
                let err = read_positions(&positions_file(name, 3000, quoted, end, bad)).unwrap_err().to_string();
                let bad = bad[0];
                assert!(
                    err.contains(&format!("line {bad},")) && err.contains("isolated_margin must be >= 0"),
                    "{name}: {err}"
                );
            }
        }
    }
}
