//! Data files: OHLC bars, funding rates and positions. Every problem is reported with the file,
//! the line and the column, before the run starts.

use crate::error::LabError;
use crate::scenario::GapPolicy;
use crate::time::{format_utc, parse_utc};
use ballast_engine::event::Id;
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
    // Fields are trimmed as they are read (`Cell::text`): csv's own field trimming rebuilds every
    // record, which costs more than parsing it.
    Ok(csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::Headers).flexible(false).from_reader(file))
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
pub fn read_positions(path: &Path) -> Result<Vec<PositionRow>, LabError> {
    let mut rdr = reader(path)?;
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
    let c = |i: usize| cols[i].unwrap_or_default();
    let mut out = Vec::new();
    // One record reused for every row: a book of 10^6 positions would otherwise allocate as
    // many records.
    let mut record = csv::StringRecord::new();
    while rdr.read_record(&mut record).map_err(|e| csv_err(path, e))? {
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let cell = Cell { path, line, record: &record, header: &header };
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
    if out.is_empty() {
        return Err(LabError::DataFile { file: path.display().to_string(), message: "no positions".into() });
    }
    Ok(out)
}
