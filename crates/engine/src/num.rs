//! Fixed-point numbers for money, prices, sizes and ratios.
//!
//! Every value in engine state is a scaled integer with a compile-time number of decimals, so
//! results are exact and identical on every platform. Arithmetic is checked: overflow is a typed
//! error, never a wrap. Every operation that divides names its rounding direction
//! (`_floor` rounds toward −∞, `_ceil` toward +∞); callers pick the direction that goes against
//! the account (requirements and debits up, collateral and credits down).
//!
//! | type    | inner  | decimals | range used                                    |
//! |---------|--------|----------|-----------------------------------------------|
//! | `Price` | `i64`  | 8        | 1e-8 .. 1e7 (quote per unit of base)          |
//! | `Size`  | `i128` | 8        | ±1e-8 .. ±1e12 (base units; also asset amounts) |
//! | `Quote` | `i128` | 6        | settlement-asset amounts (USDC's own 6 decimals) |
//! | `Ratio` | `i64`  | 8        | fractions: margins, weights, fees, rates      |
//! | `FundingIndex` | `i128` | 16 | quote per unit of base (= ratio × price, exact) |
//!
//! Products are formed in `i128` and, when that would overflow, in 256 bits (`ethnum`), then
//! rescaled with one rounding step.

use ethnum::I256;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Why a number could not be parsed or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumError {
    #[error("empty number")]
    Empty,
    #[error("'{0}' is not a plain decimal number (digits, one optional '.', optional leading '-'; no exponent, no '+', no spaces)")]
    Malformed(String),
    #[error("'{input}' has more than {max} decimals")]
    TooManyDecimals { input: String, max: u32 },
    #[error("'{0}' is out of range")]
    OutOfRange(String),
    #[error("arithmetic overflow")]
    Overflow,
    #[error("division by zero")]
    DivisionByZero,
}

pub type NumResult<T> = Result<T, NumError>;

/// An input outside the range a function accepts, named: `what = value`.
pub fn out_of_range(what: &str, v: impl fmt::Display) -> NumError {
    NumError::OutOfRange(format!("{what} = {v}"))
}

/// Rounding direction of a division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Toward −∞.
    Floor,
    /// Toward +∞.
    Ceil,
}

/// `a × b / d` rounded as asked, with a 256-bit intermediate when `a × b` overflows `i128`.
#[inline]
pub fn mul_div(a: i128, b: i128, d: i128, round: Round) -> NumResult<i128> {
    let (q, exact) = mul_div_floor_exact(a, b, d)?;
    ceil_if(q, exact, round)
}

/// `n / d` rounded as asked.
#[inline]
pub fn div_round(n: i128, d: i128, round: Round) -> NumResult<i128> {
    let (q, exact) = div_floor_exact(n, d)?;
    ceil_if(q, exact, round)
}

#[inline]
fn ceil_if(floor: i128, exact: bool, round: Round) -> NumResult<i128> {
    match round {
        Round::Ceil if !exact => floor.checked_add(1).ok_or(NumError::Overflow),
        _ => Ok(floor),
    }
}

/// `⌊a × b / d⌋` and whether the division was exact: the core of every rescaling, so the
/// caller can take both the floor and the ceiling from one division.
///
/// Hot path of every margin computation, so it avoids the slow general cases: operands that fit
/// in `i64` multiply with one widening multiply (no overflow check needed), products that fit
/// in `i64` divide with the 64-bit instruction, and the remainder comes from the quotient
/// rather than a second division. Products beyond `i128` use 256 bits.
#[inline]
pub fn mul_div_floor_exact(a: i128, b: i128, d: i128) -> NumResult<(i128, bool)> {
    match checked_mul(a, b) {
        Some(p) => div_floor_exact(p, d),
        None => mul_div_wide(a, b, d),
    }
}

/// `a × b`, `None` on overflow. Operands that fit in `i64` multiply with one widening multiply
/// (`|a·b| ≤ 2^126`, always representable), without the 128-bit overflow-checking routine.
#[inline(always)]
pub fn checked_mul(a: i128, b: i128) -> Option<i128> {
    match (i64::try_from(a), i64::try_from(b)) {
        (Ok(a), Ok(b)) => Some(i128::from(a) * i128::from(b)),
        _ => a.checked_mul(b),
    }
}

/// `⌊a × b / 10^k⌋` and whether it was exact: [`mul_div_floor_exact`] specialised for the
/// power-of-ten rescalings of this module, which divide by constants (see [`div_pow10_floor_exact`]).
/// Always inlined, so that each caller's constant `k` selects its divisors at compile time.
#[inline(always)]
pub fn mul_pow10_floor_exact(a: i128, b: i128, k: u32) -> NumResult<(i128, bool)> {
    match checked_mul(a, b) {
        Some(p) => Ok(div_pow10_floor_exact(p, k)),
        None => mul_div_wide(a, b, pow10(k)),
    }
}

/// `⌊n / 10^k⌋` and whether it was exact, without the 128-bit division routine for the scales
/// used here (k = 8, 10, 18): `10^k = 2^k · 5^k`, so shift by k, then divide the magnitude by
/// factors of `5^k` below 2^32 on 32-bit limbs with 64-bit arithmetic, where the constant
/// divisors compile to multiplications. Nested floors compose: `⌊⌊n/a⌋/b⌋ = ⌊n/(ab)⌋`.
#[inline(always)]
pub fn div_pow10_floor_exact(n: i128, k: u32) -> (i128, bool) {
    if !matches!(k, 8 | 10 | 18) {
        return div_floor_exact(n, pow10(k)).expect("10^k is a non-zero divisor");
    }
    // Divide the magnitude, then apply the sign once: ⌊n/d⌋ = −⌈|n|/d⌉ for n < 0.
    let abs = n.unsigned_abs();
    let (q, r) = match k {
        8 => udiv_small::<390_625>(abs >> 8),
        10 => udiv_small::<9_765_625>(abs >> 10),
        _ => {
            let (q, r1) = udiv_small::<1_953_125>(abs >> 18);
            let (q, r2) = udiv_small::<1_953_125>(q);
            (q, r1 | r2)
        }
    };
    let exact = r == 0 && abs & ((1 << k) - 1) == 0;
    // q ≤ |n| / 10^8 < 2^127, so the casts and the step below stay in range.
    let q = q as i128;
    match (n < 0, exact) {
        (false, _) => (q, exact),
        (true, true) => (-q, true),
        (true, false) => (-q - 1, false),
    }
}

/// Long division of a `u128` by a constant `M < 2^32`, three 64-bit steps of 64, 32 and 32 bits
/// (one step when the dividend fits in 64 bits, the common case).
#[inline(always)]
fn udiv_small<const M: u64>(n: u128) -> (u128, u64) {
    if let Ok(small) = u64::try_from(n) {
        return (u128::from(small / M), small % M);
    }
    let (hi, lo) = ((n >> 64) as u64, n as u64);
    let (q_hi, r) = (hi / M, hi % M);
    let mid = (r << 32) | (lo >> 32);
    let (q_mid, r) = (mid / M, mid % M);
    let low = (r << 32) | (lo & 0xffff_ffff);
    let (q_low, r) = (low / M, low % M);
    ((u128::from(q_hi) << 64) | (u128::from(q_mid) << 32) | u128::from(q_low), r)
}

/// `a × b` in 256 bits, or `Overflow`. ethnum's signed `checked_mul` detects overflow with a
/// 256-bit division; when the operands' bit lengths add up to at most 255 the product cannot
/// overflow, so the common case is one wrapping multiplication.
#[inline]
pub fn mul_wide(a: I256, b: I256) -> NumResult<I256> {
    let bits = |x: I256| 256 - x.unsigned_abs().leading_zeros();
    if bits(a) + bits(b) <= 255 {
        Ok(a.wrapping_mul(b))
    } else {
        a.checked_mul(b).ok_or(NumError::Overflow)
    }
}

/// `n / d` in 256 bits, rounded as asked, for either sign of `d ≠ 0`: the one wide division
/// of the crate (closed forms in `margin` and `liquidation` use it).
pub fn div_wide(n: I256, d: I256, round: Round) -> NumResult<I256> {
    if d == I256::ZERO {
        return Err(NumError::DivisionByZero);
    }
    let (n, d) = if d < 0 { (-n, -d) } else { (n, d) };
    let (q, r) = (n / d, n % d);
    Ok(match round {
        Round::Floor if r < 0 => q - 1,
        Round::Ceil if r > 0 => q + 1,
        _ => q,
    })
}

#[cold]
fn mul_div_wide(a: i128, b: i128, d: i128) -> NumResult<(i128, bool)> {
    if d == 0 {
        return Err(NumError::DivisionByZero);
    }
    let p = I256::from(a) * I256::from(b);
    let dd = I256::from(d);
    let mut q = p / dd;
    let r = p - q * dd;
    if r != 0 && ((r < 0) != (dd < 0)) {
        q -= 1;
    }
    Ok((i128::try_from(q).map_err(|_| NumError::Overflow)?, r == 0))
}

/// `⌊n / d⌋` and whether the division was exact.
#[inline]
pub fn div_floor_exact(n: i128, d: i128) -> NumResult<(i128, bool)> {
    if d == 0 {
        return Err(NumError::DivisionByZero);
    }
    if let (Ok(n64), Ok(d64)) = (i64::try_from(n), i64::try_from(d)) {
        if let Some(q) = n64.checked_div(d64) {
            let r = n64 - q * d64;
            // |q| ≤ |n| < 2^63, so the step down stays inside i128.
            let q = i128::from(q) - i128::from(r != 0 && ((r < 0) != (d64 < 0)));
            return Ok((q, r == 0));
        }
    }
    // A non-negative quotient (a share of an amount, a distance) by a divisor below 2^64:
    // compiler-builtins divides that with the hardware's 128-by-64-bit division, where the
    // signed path takes the general 128-bit routine.
    if let (Ok(nu), Ok(du)) = (u128::try_from(n), u64::try_from(d)) {
        let (q, r) = (nu / u128::from(du), nu % u128::from(du));
        // q ≤ n < 2^127.
        return Ok((q as i128, r == 0));
    }
    let q = n.checked_div(d).ok_or(NumError::Overflow)?;
    let r = n - q * d;
    if r != 0 && ((r < 0) != (d < 0)) {
        return Ok((q.checked_sub(1).ok_or(NumError::Overflow)?, false));
    }
    Ok((q, r == 0))
}

/// Integer square root (floor) of a non-negative `u128`, by Newton's method.
pub fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    // Start from a power of two at or above the root, then descend monotonically.
    let bits = 128 - n.leading_zeros();
    let mut x: u128 = 1u128 << bits.div_ceil(2);
    loop {
        let y = (x + n / x) / 2;
        if y >= x {
            return x;
        }
        x = y;
    }
}

/// Parse a plain decimal string into an integer scaled by `10^decimals`.
///
/// Accepted: `-?[0-9]+(\.[0-9]+)?`. Rejected with a reason: empty input, exponent forms,
/// a leading `+`, spaces, a bare or trailing `.`, and more fractional digits than `decimals`
/// (never rounded silently). `-0` parses as zero.
pub fn parse_scaled(s: &str, decimals: u32) -> NumResult<i128> {
    if s.is_empty() {
        return Err(NumError::Empty);
    }
    let malformed = || NumError::Malformed(s.to_string());
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
        return Err(malformed());
    }
    let frac = frac_part.unwrap_or("");
    let frac_trimmed = frac.trim_end_matches('0');
    if frac_trimmed.len() > decimals as usize {
        return Err(NumError::TooManyDecimals { input: s.to_string(), max: decimals });
    }
    let out_of_range = || NumError::OutOfRange(s.to_string());
    let mut v: i128 = 0;
    for b in int_part.bytes() {
        v = v.checked_mul(10).and_then(|v| v.checked_add(i128::from(b - b'0'))).ok_or_else(out_of_range)?;
    }
    let scale = pow10(decimals);
    v = v.checked_mul(scale).ok_or_else(out_of_range)?;
    let mut frac_value: i128 = 0;
    for b in frac_trimmed.bytes() {
        frac_value = frac_value * 10 + i128::from(b - b'0');
    }
    // frac_trimmed has at most `decimals` digits; pad to the scale.
    frac_value *= pow10(decimals - frac_trimmed.len() as u32);
    v = v.checked_add(frac_value).ok_or_else(out_of_range)?;
    Ok(if negative { -v } else { v })
}

/// Room for any scaled number: 39 digits of a u128, the point, the sign and a leading zero.
pub type DecimalBuf = [u8; 42];

/// Print an integer scaled by `10^decimals` (at most 38) as the shortest exact decimal string.
pub fn format_scaled(v: i128, decimals: u32, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(scaled_str(v, decimals, &mut [0; 42]))
}

/// The shortest exact decimal string of `v × 10^-decimals` (`decimals` at most 38), written
/// at the end of `buf`.
///
/// Every number of every event, snapshot and state hash goes through here, so the digits
/// are made in a stack buffer without an allocation, and a value below 2^64 divides in 64
/// bits (a multiply; a 128-bit division is a library call).
pub fn scaled_str(v: i128, decimals: u32, buf: &mut DecimalBuf) -> &str {
    let mut at = buf.len();
    let mut n = v.unsigned_abs();
    // The last digit of `n` as ASCII; `n` loses it.
    fn next_digit(n: &mut u128) -> u8 {
        let d = match u64::try_from(*n) {
            Ok(small) => {
                *n = u128::from(small / 10);
                small % 10
            }
            Err(_) => {
                let d = (*n % 10) as u64;
                *n /= 10;
                d
            }
        };
        b'0' + d as u8
    }
    // Fraction digits from the last; the trailing zeros are dropped.
    let mut fraction = false;
    for _ in 0..decimals {
        let d = next_digit(&mut n);
        if fraction || d != b'0' {
            at -= 1;
            buf[at] = d;
            fraction = true;
        }
    }
    if fraction {
        at -= 1;
        buf[at] = b'.';
    }
    loop {
        at -= 1;
        buf[at] = next_digit(&mut n);
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    std::str::from_utf8(&buf[at..]).expect("digits, a point and a sign are ASCII")
}

/// `10^n` for `n ≤ 38`.
pub const fn pow10(n: u32) -> i128 {
    let mut v: i128 = 1;
    let mut i = 0;
    while i < n {
        v *= 10;
        i += 1;
    }
    v
}

macro_rules! fixed_type {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $decimals:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name($inner);

        impl $name {
            /// Number of decimals of the fixed-point representation.
            pub const DECIMALS: u32 = $decimals;
            /// The raw integer that represents 1.
            pub const ONE_RAW: $inner = pow10($decimals) as $inner;
            pub const ZERO: Self = Self(0);
            pub const ONE: Self = Self(Self::ONE_RAW);
            pub const MAX: Self = Self(<$inner>::MAX);

            /// From the raw scaled integer (`raw / 10^DECIMALS`).
            pub const fn from_raw(raw: $inner) -> Self {
                Self(raw)
            }
            /// The raw scaled integer.
            pub const fn raw(self) -> $inner {
                self.0
            }
            /// From a raw scaled integer of any width; out of the inner type's range is an
            /// overflow.
            pub fn try_from_raw(raw: i128) -> NumResult<Self> {
                <$inner>::try_from(raw).map(Self).map_err(|_| NumError::Overflow)
            }
            /// A whole number of units.
            pub fn from_int(units: i64) -> NumResult<Self> {
                <$inner>::try_from(units)
                    .ok()
                    .and_then(|u| u.checked_mul(Self::ONE_RAW))
                    .map(Self)
                    .ok_or(NumError::Overflow)
            }
            pub fn checked_add(self, rhs: Self) -> NumResult<Self> {
                self.0.checked_add(rhs.0).map(Self).ok_or(NumError::Overflow)
            }
            pub fn checked_sub(self, rhs: Self) -> NumResult<Self> {
                self.0.checked_sub(rhs.0).map(Self).ok_or(NumError::Overflow)
            }
            pub fn checked_neg(self) -> NumResult<Self> {
                self.0.checked_neg().map(Self).ok_or(NumError::Overflow)
            }
            pub fn abs(self) -> NumResult<Self> {
                self.0.checked_abs().map(Self).ok_or(NumError::Overflow)
            }
            pub const fn is_zero(self) -> bool {
                self.0 == 0
            }
            pub const fn is_positive(self) -> bool {
                self.0 > 0
            }
            pub const fn is_negative(self) -> bool {
                self.0 < 0
            }
            /// −1, 0 or 1.
            pub fn signum(self) -> i128 {
                i128::from(self.0.signum())
            }
            /// Multiply by a ratio, rounding toward −∞.
            pub fn mul_ratio_floor(self, r: Ratio) -> NumResult<Self> {
                self.mul_ratio(r, Round::Floor)
            }
            /// Multiply by a ratio, rounding toward +∞.
            pub fn mul_ratio_ceil(self, r: Ratio) -> NumResult<Self> {
                self.mul_ratio(r, Round::Ceil)
            }
            #[inline(always)]
            fn mul_ratio(self, r: Ratio, round: Round) -> NumResult<Self> {
                // Requirements and fees: a non-negative amount whose product with the ratio
                // fits in 64 bits divides by the constant 10^8 in 64-bit arithmetic.
                if let (Ok(a), Ok(b)) = (u64::try_from(self.0), u64::try_from(r.raw())) {
                    if let Some(p) = a.checked_mul(b) {
                        const ONE: u64 = Ratio::ONE_RAW as u64;
                        let q = match round {
                            Round::Floor => p / ONE,
                            Round::Ceil => p.div_ceil(ONE),
                        };
                        // q < 2^64 / 10^8 < 2^37: fits every inner type.
                        return Ok(Self(q as $inner));
                    }
                }
                self.mul_ratio_wide(r, round)
            }
            /// [`Self::mul_ratio`] for a negative operand or a product beyond 64 bits.
            #[inline(never)]
            fn mul_ratio_wide(self, r: Ratio, round: Round) -> NumResult<Self> {
                let (q, exact) = mul_pow10_floor_exact(i128::from(self.0), i128::from(r.raw()), Ratio::DECIMALS)?;
                let v = ceil_if(q, exact, round)?;
                <$inner>::try_from(v).map(Self).map_err(|_| NumError::Overflow)
            }
            /// Parse a plain decimal string; see [`parse_scaled`].
            pub fn parse(s: &str) -> NumResult<Self> {
                let v = parse_scaled(s, $decimals)?;
                <$inner>::try_from(v).map(Self).map_err(|_| NumError::OutOfRange(s.to_string()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                format_scaled(i128::from(self.0), $decimals, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = NumError;
            fn from_str(s: &str) -> NumResult<Self> {
                Self::parse(s)
            }
        }

        /// Serialized as a decimal string: JSON numbers lose precision past 2^53. Printed
        /// once into a stack buffer: a length-prefixed format (the snapshots' postcard)
        /// would otherwise print it twice, once to learn its length.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(scaled_str(i128::from(self.0), $decimals, &mut [0; 42]))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a decimal string with at most {} decimals", $decimals)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::parse(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

fixed_type!(
    /// A price in quote per unit of base, 8 decimals.
    Price, i64, 8
);
fixed_type!(
    /// A signed quantity of base (a position size) or of a collateral asset, 8 decimals.
    Size, i128, 8
);
fixed_type!(
    /// An amount of the settlement asset (USDC), 6 decimals.
    Quote, i128, 6
);
fixed_type!(
    /// A dimensionless fraction (margin fraction, weight, fee, rate), 8 decimals.
    Ratio, i64, 8
);
fixed_type!(
    /// A cumulative funding index: quote per unit of base, 16 decimals (a ratio times a price, exact).
    FundingIndex, i128, 16
);

/// Decimals dropped from a price × size product (16 decimals) to quote (6 decimals).
const NOTIONAL_DECIMALS: u32 = Price::DECIMALS + Size::DECIMALS - Quote::DECIMALS;
/// Raw price × raw size per raw quote unit (1e10).
pub const NOTIONAL_TO_QUOTE: i128 = pow10(NOTIONAL_DECIMALS);
/// The raw ratio that represents 1, as `i128`.
pub const RATIO_ONE: i128 = Ratio::ONE_RAW as i128;

impl Size {
    /// `|size| × price` in quote, rounded as asked. Always non-negative.
    pub fn notional(self, price: Price, round: Round) -> NumResult<Quote> {
        let abs = self.0.checked_abs().ok_or(NumError::Overflow)?;
        let (q, exact) = mul_pow10_floor_exact(abs, i128::from(price.0), NOTIONAL_DECIMALS)?;
        Ok(Quote(ceil_if(q, exact, round)?))
    }
    /// Signed `size × price` in quote (a position's value at that price), rounded as asked.
    pub fn value_at(self, price: Price, round: Round) -> NumResult<Quote> {
        let (q, exact) = mul_pow10_floor_exact(self.0, i128::from(price.0), NOTIONAL_DECIMALS)?;
        Ok(Quote(ceil_if(q, exact, round)?))
    }
    /// The signed value `size × price` rounded down and the notional `|size| × price` rounded
    /// up, from one division (what a margin computation needs for every position).
    #[inline]
    pub fn value_floor_and_notional_ceil(self, price: Price) -> NumResult<(Quote, Quote)> {
        let (q, exact) = mul_pow10_floor_exact(self.0, i128::from(price.0), NOTIONAL_DECIMALS)?;
        // ⌈|v|⌉ is ⌈v⌉ for a long and −⌊v⌋ for a short.
        let notional = if self.0 >= 0 { q + i128::from(!exact) } else { q.checked_neg().ok_or(NumError::Overflow)? };
        Ok((Quote(q), Quote(notional)))
    }
    /// `|size| × price` rounded down and rounded up, from one division (what a fill moves).
    #[inline]
    pub fn notional_floor_and_ceil(self, price: Price) -> NumResult<(Quote, Quote)> {
        let abs = self.0.checked_abs().ok_or(NumError::Overflow)?;
        let (q, exact) = mul_pow10_floor_exact(abs, i128::from(price.0), NOTIONAL_DECIMALS)?;
        Ok((Quote(q), Quote(q + i128::from(!exact))))
    }
    /// `self × num / den` with `num` and `den` sizes (a pro-rata share), rounded as asked.
    pub fn mul_div(self, num: Size, den: Size, round: Round) -> NumResult<Size> {
        Ok(Size(mul_div(self.0, num.0, den.0, round)?))
    }
}

impl Quote {
    /// An amount given with the 8-decimal asset scale, as exact settlement-asset units; more
    /// than 6 decimals is an error, never rounded.
    pub fn from_amount(a: Size) -> NumResult<Quote> {
        const STEP: i128 = pow10(Size::DECIMALS - Quote::DECIMALS);
        if a.0 % STEP != 0 {
            return Err(NumError::TooManyDecimals { input: a.to_string(), max: Quote::DECIMALS });
        }
        Ok(Quote(a.0 / STEP))
    }
    /// This amount on the 8-decimal asset scale (exact).
    pub fn to_amount(self) -> NumResult<Size> {
        const STEP: i128 = pow10(Size::DECIMALS - Quote::DECIMALS);
        self.0.checked_mul(STEP).map(Size).ok_or(NumError::Overflow)
    }
    /// `self × num / den` (a pro-rata share of this amount), rounded as asked.
    pub fn mul_div_size(self, num: Size, den: Size, round: Round) -> NumResult<Quote> {
        Ok(Quote(mul_div(self.0, num.0, den.0, round)?))
    }
    /// `self / size` as a price (e.g. an entry price from a cost basis), rounded as asked.
    pub fn per_unit(self, size: Size, round: Round) -> NumResult<Price> {
        let p = mul_div(self.0, NOTIONAL_TO_QUOTE, size.0, round)?;
        Price::try_from_raw(p)
    }
    /// `self / other` as a ratio, rounded as asked.
    pub fn ratio_to(self, other: Quote, round: Round) -> NumResult<Ratio> {
        let r = mul_div(self.0, i128::from(Ratio::ONE_RAW), other.0, round)?;
        Ratio::try_from_raw(r)
    }
    /// The smaller of two amounts.
    pub fn min(self, other: Quote) -> Quote {
        Ord::min(self, other)
    }
    /// The larger of two amounts.
    pub fn max(self, other: Quote) -> Quote {
        Ord::max(self, other)
    }
}

impl Price {
    /// The largest price a command may carry: 1e9, a hundred times the documented range
    /// (DESIGN §3: prices up to 1e7), and far enough below `i64::MAX / 1e8` (9.2e10) that a
    /// rounded-up entry price (`|cost| / size`, at most 1e-6 / 1e-8 = 100 above the price) and
    /// the mark's band always fit.
    pub const MAX_SUPPORTED: Price = Price(1_000_000_000 * Price::ONE_RAW);

    /// `self × r`, rounded as asked.
    pub fn scale(self, r: Ratio, round: Round) -> NumResult<Price> {
        self.mul_ratio(r, round)
    }
    /// `(self − base) / base` as a ratio, rounded as asked.
    pub fn relative_change(self, base: Price, round: Round) -> NumResult<Ratio> {
        let diff = i128::from(self.0) - i128::from(base.0);
        let r = mul_div(diff, i128::from(Ratio::ONE_RAW), i128::from(base.0), round)?;
        Ratio::try_from_raw(r)
    }
}

impl Ratio {
    /// `self × other`, rounded as asked.
    pub fn mul(self, other: Ratio, round: Round) -> NumResult<Ratio> {
        self.mul_ratio(other, round)
    }
    /// `self / other`, rounded as asked.
    pub fn div(self, other: Ratio, round: Round) -> NumResult<Ratio> {
        let r = mul_div(i128::from(self.0), i128::from(Self::ONE_RAW), i128::from(other.0), round)?;
        Ratio::try_from_raw(r)
    }
    /// Clamp into `[lo, hi]`.
    pub fn clamp(self, lo: Ratio, hi: Ratio) -> Ratio {
        Ord::clamp(self, lo, hi)
    }
}

impl FundingIndex {
    /// The index increment for one funding period: `rate × price`, exact.
    pub fn increment(rate: Ratio, price: Price) -> NumResult<FundingIndex> {
        i128::from(rate.0).checked_mul(i128::from(price.0)).map(FundingIndex).ok_or(NumError::Overflow)
    }
    /// What a position of `size` owes for an index move of `self` (positive = the position
    /// pays), rounded as asked: `size × Δindex`.
    #[inline]
    pub fn owed_by(self, size: Size, round: Round) -> NumResult<Quote> {
        const TO_QUOTE: u32 = Size::DECIMALS + FundingIndex::DECIMALS - Quote::DECIMALS;
        let (q, exact) = mul_pow10_floor_exact(size.0, self.0, TO_QUOTE)?;
        Ok(Quote(ceil_if(q, exact, round)?))
    }
}

/// Sum of quote amounts, checked.
pub fn sum_quote<I: IntoIterator<Item = Quote>>(items: I) -> NumResult<Quote> {
    items.into_iter().try_fold(Quote::ZERO, Quote::checked_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(Price::parse("50000").unwrap().raw(), 5_000_000_000_000);
        assert_eq!(Price::parse("0.00000001").unwrap().raw(), 1);
        assert_eq!(Quote::parse("-12.5").unwrap().raw(), -12_500_000);
        assert_eq!(Ratio::parse("0.004").unwrap().raw(), 400_000);
        assert_eq!(Size::parse("007.10").unwrap().raw(), 710_000_000);
    }

    #[test]
    fn trailing_zeros_beyond_the_scale_are_not_extra_decimals() {
        assert_eq!(Quote::parse("1.50000000000").unwrap(), Quote::parse("1.5").unwrap());
    }

    #[test]
    fn rejects_too_many_decimals_instead_of_rounding() {
        assert_eq!(Quote::parse("1.0000001"), Err(NumError::TooManyDecimals { input: "1.0000001".into(), max: 6 }));
        assert!(matches!(Price::parse("0.000000001"), Err(NumError::TooManyDecimals { .. })));
    }

    #[test]
    fn rejects_exponents_signs_spaces_and_stray_points() {
        for bad in [
            "1e5", "1E5", "1.5e-3", "+1", " 1", "1 ", "1.", ".5", "-", "--1", "1.2.3", "0x10", "NaN", "inf", "1_000",
            "١",
        ] {
            assert!(matches!(Quote::parse(bad), Err(NumError::Malformed(_))), "{bad:?} should be malformed");
        }
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(Quote::parse(""), Err(NumError::Empty));
    }

    #[test]
    fn negative_zero_is_zero() {
        let z = Quote::parse("-0").unwrap();
        assert_eq!(z, Quote::ZERO);
        assert_eq!(z.to_string(), "0");
        assert_eq!(Price::parse("-0.000").unwrap(), Price::ZERO);
    }

    #[test]
    fn rejects_overflow_of_the_inner_type() {
        // i64 with 8 decimals holds up to 92233720368.54775807.
        assert!(matches!(Price::parse("92233720369"), Err(NumError::OutOfRange(_))));
        assert!(matches!(Price::parse("92233720368.54775808"), Err(NumError::OutOfRange(_))));
        assert_eq!(Price::parse("92233720368.54775807").unwrap().raw(), i64::MAX);
        assert!(matches!(Quote::parse(&"9".repeat(40)), Err(NumError::OutOfRange(_))));
    }

    #[test]
    fn prints_shortest_exact_form() {
        assert_eq!(Price::parse("45180.72000").unwrap().to_string(), "45180.72");
        assert_eq!(Quote::parse("-0.000001").unwrap().to_string(), "-0.000001");
        assert_eq!(Size::from_raw(-150_000_000).to_string(), "-1.5");
        assert_eq!(Quote::ZERO.to_string(), "0");
    }

    #[test]
    fn print_parse_round_trip() {
        for raw in [0i128, 1, -1, 999_999, 1_000_000, -123_456_789_012, i128::from(i64::MAX)] {
            let q = Quote::from_raw(raw);
            assert_eq!(Quote::parse(&q.to_string()).unwrap(), q);
        }
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        assert_eq!(Quote::MAX.checked_add(Quote::from_raw(1)), Err(NumError::Overflow));
        assert_eq!(Price::from_raw(i64::MIN).abs(), Err(NumError::Overflow));
        assert_eq!(Ratio::ONE.div(Ratio::ZERO, Round::Floor), Err(NumError::DivisionByZero));
    }

    #[test]
    fn rounding_directions() {
        assert_eq!(div_round(7, 2, Round::Floor), Ok(3));
        assert_eq!(div_round(7, 2, Round::Ceil), Ok(4));
        assert_eq!(div_round(-7, 2, Round::Floor), Ok(-4));
        assert_eq!(div_round(-7, 2, Round::Ceil), Ok(-3));
        assert_eq!(div_round(7, -2, Round::Floor), Ok(-4));
        assert_eq!(div_round(6, 2, Round::Ceil), Ok(3));
        // 1/3 of a micro-dollar requirement rounds up; a 1/3 credit rounds down.
        let q = Quote::from_raw(1);
        let third = Ratio::parse("0.33333333").unwrap();
        assert_eq!(q.mul_ratio_ceil(third).unwrap().raw(), 1);
        assert_eq!(q.mul_ratio_floor(third).unwrap().raw(), 0);
        // A negative value rounded down moves away from zero: against the account.
        assert_eq!(Quote::from_raw(-1).mul_ratio_floor(third).unwrap().raw(), -1);
    }

    #[test]
    fn notional_rounds_in_the_asked_direction() {
        // 0.00000001 × 0.00000001 = 1e-16, far below a micro-dollar.
        let s = Size::from_raw(1);
        let p = Price::from_raw(1);
        assert_eq!(s.notional(p, Round::Floor).unwrap(), Quote::ZERO);
        assert_eq!(s.notional(p, Round::Ceil).unwrap(), Quote::from_raw(1));
        let short = Size::from_raw(-1);
        assert_eq!(short.value_at(p, Round::Floor).unwrap(), Quote::from_raw(-1));
        assert_eq!(short.value_at(p, Round::Ceil).unwrap(), Quote::ZERO);
    }

    #[test]
    fn extreme_products_use_the_wide_path() {
        // 1e12 base at 1e7 = 1e19 quote: the product of raws (1e20 × 1e15) fits i128, but a
        // funding index over a long history times a large size does not.
        let size = Size::parse("1000000000000").unwrap();
        let price = Price::parse("10000000").unwrap();
        assert_eq!(size.notional(price, Round::Floor).unwrap().to_string(), "10000000000000000000");
        // 1e12+1e-8 × 123456.7890123456789012 = 123456789012345678.9024345678901234...
        let size = Size::parse("1000000000000.00000001").unwrap();
        let idx = FundingIndex::parse("123456.7890123456789012").unwrap();
        let owed = idx.owed_by(size, Round::Ceil).unwrap();
        assert_eq!(owed.to_string(), "123456789012345678.902435");
        assert_eq!(idx.owed_by(size, Round::Floor).unwrap().to_string(), "123456789012345678.902434");
    }

    #[test]
    fn mul_div_wide_rounding_matches_narrow() {
        let cases = [(7i128, 3i128, 2i128), (-7, 3, 2), (7, -3, 2), (i128::MAX / 3, 5, 7), (-(i128::MAX / 3), 5, 7)];
        for (a, b, d) in cases {
            for round in [Round::Floor, Round::Ceil] {
                let wide = mul_div(a, b, d, round).unwrap();
                let exact = I256::from(a) * I256::from(b);
                let back = I256::from(wide) * I256::from(d);
                match round {
                    Round::Floor => assert!(back <= exact && back + I256::from(d) > exact),
                    Round::Ceil => assert!(back >= exact && back - I256::from(d) < exact),
                }
            }
        }
    }

    #[test]
    fn one_division_gives_both_roundings() {
        let p = Price::parse("12345.67891234").unwrap();
        for size in ["0.00000003", "-0.00000003", "2", "-2", "0"] {
            let s = Size::parse(size).unwrap();
            let (value, notional) = s.value_floor_and_notional_ceil(p).unwrap();
            assert_eq!(value, s.value_at(p, Round::Floor).unwrap(), "{size}");
            assert_eq!(notional, s.notional(p, Round::Ceil).unwrap(), "{size}");
            let (lo, hi) = s.notional_floor_and_ceil(p).unwrap();
            assert_eq!((lo, hi), (s.notional(p, Round::Floor).unwrap(), s.notional(p, Round::Ceil).unwrap()));
        }
    }

    use proptest::prelude::*;

    /// `format_scaled` for tests: a value and its scale as a `Display`.
    struct Scaled(i128, u32);

    impl fmt::Display for Scaled {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            format_scaled(self.0, self.1, f)
        }
    }

    proptest! {
        /// The printed form is the exact value, shortest: the integer part, then the fraction
        /// without trailing zeros, told apart by 128-bit arithmetic and `format!` of integers.
        #[test]
        fn format_scaled_prints_the_exact_shortest_decimal(
            v in prop_oneof![any::<i64>().prop_map(i128::from), any::<i128>(), -1_000i128..1_000],
            decimals in prop_oneof![Just(6u32), Just(8), 0u32..=38],
        ) {
            let scale = 10u128.pow(decimals);
            let (int, frac) = (v.unsigned_abs() / scale, v.unsigned_abs() % scale);
            let sign = if v < 0 { "-" } else { "" };
            let want = match frac {
                0 => format!("{sign}{int}"),
                _ => format!("{sign}{int}.{}", format!("{frac:0w$}", w = decimals as usize).trim_end_matches('0')),
            };
            prop_assert_eq!(Scaled(v, decimals).to_string(), want);
        }

        /// Power-of-ten division by shifts and constant limbs agrees with plain division.
        #[test]
        fn pow10_division_matches_plain_division(n in any::<i128>(), k in prop_oneof![Just(8u32), Just(10), Just(18), 1u32..20]) {
            prop_assert_eq!(div_pow10_floor_exact(n, k), div_floor_exact(n, pow10(k)).unwrap());
        }

        /// `mul_ratio`'s 64-bit path agrees with the general one, at every magnitude and sign.
        #[test]
        fn mul_ratio_fast_path_matches_the_general_one(
            q in prop_oneof![0i128..1 << 40, -(1i128 << 40)..0, any::<i64>().prop_map(i128::from), any::<i128>()],
            r in prop_oneof![0i64..=Ratio::ONE_RAW, any::<i64>()],
        ) {
            let (q, r) = (Quote::from_raw(q), Ratio::from_raw(r));
            for round in [Round::Floor, Round::Ceil] {
                prop_assert_eq!(q.mul_ratio(r, round), q.mul_ratio_wide(r, round));
            }
        }

        /// The fast paths agree with a 256-bit reference on every sign and magnitude.
        #[test]
        fn mul_div_matches_a_wide_reference(
            a in prop_oneof![any::<i64>().prop_map(i128::from), any::<i128>()],
            b in prop_oneof![any::<i64>().prop_map(i128::from), -1_000_000_000i128..1_000_000_000],
            d in prop_oneof![1i128..100_000, -100_000i128..-1, any::<i64>().prop_map(i128::from)],
        ) {
            prop_assume!(d != 0);
            let exact = I256::from(a) * I256::from(b);
            let dd = I256::from(d);
            let mut floor = exact / dd;
            if exact % dd != 0 && ((exact % dd < 0) != (dd < 0)) {
                floor -= 1;
            }
            let ceil = if floor * dd == exact { floor } else { floor + 1 };
            for (round, want) in [(Round::Floor, floor), (Round::Ceil, ceil)] {
                match (mul_div(a, b, d, round), i128::try_from(want)) {
                    (Ok(got), Ok(want)) => prop_assert_eq!(got, want),
                    (Err(_), Err(_)) => {}
                    (got, want) => prop_assert!(false, "{a}×{b}/{d} {round:?}: {got:?} vs {want:?}"),
                }
            }
        }
    }

    #[test]
    fn integer_sqrt_is_floor_of_root() {
        for n in [0u128, 1, 2, 3, 4, 15, 16, 17, 1 << 64, u128::MAX] {
            let r = isqrt(n);
            assert!(r.checked_mul(r).is_some_and(|sq| sq <= n));
            assert!((r + 1).checked_mul(r + 1).is_none_or(|sq| sq > n));
        }
    }

    #[test]
    fn serde_uses_strings() {
        let p: Price = serde_json::from_str("\"50000.5\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"50000.5\"");
        assert!(serde_json::from_str::<Price>("50000").is_err(), "numbers must be strings");
    }
}
