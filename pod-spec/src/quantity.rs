//! Kubernetes `resource.Quantity`: parsing exactly as `k8s.io/apimachinery` parses, canonical form.
//!
//! A quantity is kept as a signed number of nano-units (10^-9) in an `i128`, which is exact for
//! every value Kubernetes can represent below about 1.7e29 units; larger values are rejected as
//! out of range (Kubernetes would keep them in an arbitrary-precision decimal).

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Nano-units in one unit.
const NANOS: i128 = 1_000_000_000;
/// Kubernetes caps binary-SI quantities at `math.MaxInt64` units.
const MAX_BINARY_UNITS: i128 = i64::MAX as i128;

/// Why a string is not a quantity; the texts are the ones Kubernetes uses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// The string does not have the shape of a quantity.
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    FormatWrong,
    /// The suffix is not one Kubernetes knows.
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The number is too large for peapod's exact representation.
    #[error("quantity is out of the range peapod supports (about 1.7e29)")]
    OutOfRange,
}

/// How a quantity is written, as in Kubernetes (`DecimalSI`, `BinarySI`, `DecimalExponent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `k`, `M`, `G`, `m`, … suffixes (powers of 1000).
    DecimalSI,
    /// `Ki`, `Mi`, `Gi`, … suffixes (powers of 1024).
    BinarySI,
    /// `1e3`, `1E-3`.
    DecimalExponent,
}

/// A parsed `resource.Quantity`. Equality compares values, as `Quantity.Equal` does
/// (`1Ki` equals `1024`).
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl Quantity {
    /// Parses a quantity the way `resource.ParseQuantity` does (including its rounding of
    /// non-zero values up to the next nano-unit and its cap of binary values at 2^63-1).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        parse(s)
    }

    /// A quantity of `nanos` nano-units written in `format`.
    pub fn from_nanos(nanos: i128, format: Format) -> Self {
        Self { nanos, format }
    }

    /// The exact value in nano-units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The format the quantity was written in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// `ceil(value * 1000)`, Kubernetes' `MilliValue` (millicores for cpu).
    pub fn milli_value(&self) -> i128 {
        div_ceil(self.nanos, 1_000_000)
    }

    /// `ceil(value)`, Kubernetes' `Value` (bytes for memory).
    pub fn value(&self) -> i128 {
        div_ceil(self.nanos, NANOS)
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The canonical string, as Kubernetes prints it (`0.5` → `500m`, `1.5Gi` → `1536Mi`).
    pub fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".to_string();
        }
        let mut format = self.format;
        if format == Format::BinarySI
            && (self.nanos.abs() < 1024 * NANOS || self.nanos % NANOS != 0)
        {
            format = Format::DecimalSI;
        }
        if format == Format::BinarySI {
            let mut amount = self.nanos / NANOS;
            let mut times = 0;
            while times < 6 && amount % 1024 == 0 {
                amount /= 1024;
                times += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][times];
            return format!("{amount}{suffix}");
        }
        let mut amount = self.nanos;
        let mut exponent: i32 = -9;
        while amount % 10 == 0 {
            amount /= 10;
            exponent += 1;
        }
        match exponent.rem_euclid(3) {
            1 => {
                amount *= 10;
                exponent -= 1;
            }
            2 => {
                amount *= 100;
                exponent -= 2;
            }
            _ => {}
        }
        if format == Format::DecimalExponent {
            return if exponent == 0 {
                amount.to_string()
            } else {
                format!("{amount}e{exponent}")
            };
        }
        while exponent > 18 {
            amount *= 1000;
            exponent -= 3;
        }
        let suffix = match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => "",
        };
        format!("{amount}{suffix}")
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.canonical())
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as 500m, 128Mi or 1")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                parse(&v.to_string()).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Quantity {
    fn schema_name() -> String {
        "Quantity".to_string()
    }

    fn json_schema(_gen: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        let mut obj = schemars::schema::SchemaObject::default();
        obj.metadata().description = Some(
            "A fixed-point number with an optional suffix, as in Kubernetes: decimal SI \
             (n, u, m, k, M, G, T, P, E), binary SI (Ki, Mi, Gi, Ti, Pi, Ei) or an exponent \
             (1e3). Examples: 500m (half a cpu), 128Mi, 1G."
                .to_string(),
        );
        obj.extensions
            .insert("x-peapod-type".to_string(), serde_json::json!("quantity"));
        schemars::schema::Schema::Object(obj)
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 {
        q + 1
    } else {
        q
    }
}

/// The pieces `parseQuantityString` extracts.
struct Parts<'a> {
    positive: bool,
    num: &'a str,
    denom: &'a str,
    suffix: &'a str,
}

/// A transcription of apimachinery's `parseQuantityString`, quirks included (`-`, `.` and
/// `1.G` are accepted).
fn split(s: &str) -> Result<Parts<'_>, QuantityError> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    if let Some(&c) = b.first() {
        if c == b'-' {
            positive = false;
            pos += 1;
        } else if c == b'+' {
            pos += 1;
        }
    }
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    let zero = Parts {
        positive,
        num: "0",
        denom: "",
        suffix: "",
    };
    if pos >= end {
        return Ok(zero);
    }
    let start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let mut num = &s[start..pos];
    if num.is_empty() {
        num = "0";
    }
    let mut denom = "";
    if pos < end && b[pos] == b'.' {
        pos += 1;
        let dstart = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[dstart..pos];
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(QuantityError::FormatWrong);
    }
    Ok(Parts {
        positive,
        num,
        denom,
        suffix: &s[suffix_start..],
    })
}

/// `(base, exponent, format)` for a suffix, as `suffixHandler.interpret` does.
fn interpret(suffix: &str) -> Option<(u32, i64, Format)> {
    let dec = match suffix {
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "" => Some(0),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(e) = dec {
        return Some((10, e, Format::DecimalSI));
    }
    let bin = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(e) = bin {
        return Some((2, e, Format::BinarySI));
    }
    let rest = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?;
    if rest.is_empty() {
        return None;
    }
    // Go's strconv.ParseInt accepts a leading sign, as does Rust's parse.
    let e: i64 = rest.parse().ok()?;
    Some((10, i64::from(e as i32), Format::DecimalExponent))
}

fn parse(s: &str) -> Result<Quantity, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::FormatWrong);
    }
    let parts = split(s)?;
    let (base, exponent, format) = interpret(parts.suffix).ok_or(QuantityError::Suffix)?;
    // digits = num ++ denom, value = digits * 10^-len(denom) * base^exponent, in nanos.
    let digits = format!("{}{}", parts.num, parts.denom);
    let digits = digits.trim_start_matches('0');
    let mut scale10: i64 = 9 - parts.denom.len() as i64;
    let mut pow2: u32 = 0;
    if base == 10 {
        scale10 += exponent;
    } else {
        pow2 = exponent as u32;
    }
    let magnitude = if digits.is_empty() {
        0
    } else {
        scaled(digits, scale10, pow2)?
    };
    let mut format = format;
    let mut magnitude = magnitude;
    if format == Format::BinarySI {
        if magnitude > MAX_BINARY_UNITS * NANOS {
            magnitude = MAX_BINARY_UNITS * NANOS;
        }
        if magnitude > 0 && magnitude < NANOS {
            format = Format::DecimalSI;
        }
    }
    let nanos = if parts.positive {
        magnitude
    } else {
        -magnitude
    };
    Ok(Quantity { nanos, format })
}

/// `ceil(digits * 10^scale10 * 2^pow2)` with overflow checks.
fn scaled(digits: &str, scale10: i64, pow2: u32) -> Result<i128, QuantityError> {
    if scale10 >= 0 {
        let mut v: i128 = digits.parse().map_err(|_| QuantityError::OutOfRange)?;
        for _ in 0..scale10 {
            v = v.checked_mul(10).ok_or(QuantityError::OutOfRange)?;
        }
        return v
            .checked_mul(1i128 << pow2)
            .ok_or(QuantityError::OutOfRange);
    }
    // Fractional nanos: drop trailing zeros first so long exact inputs still fit.
    let mut digits = digits;
    let mut scale10 = scale10;
    while scale10 < 0 && digits.ends_with('0') {
        digits = &digits[..digits.len() - 1];
        scale10 += 1;
    }
    if scale10 >= 0 {
        return scaled(digits, scale10, pow2);
    }
    let shift = usize::try_from(-scale10).map_err(|_| QuantityError::OutOfRange)?;
    if pow2 == 0 {
        // ceil(digits / 10^shift) without big numbers: split the digit string.
        if shift >= digits.len() {
            return Ok(1);
        }
        let (head, _tail) = digits.split_at(digits.len() - shift);
        let head: i128 = head.parse().map_err(|_| QuantityError::OutOfRange)?;
        // The tail is non-zero because trailing zeros were stripped.
        return head.checked_add(1).ok_or(QuantityError::OutOfRange);
    }
    let v: i128 = digits.parse().map_err(|_| QuantityError::OutOfRange)?;
    let v = v
        .checked_mul(1i128 << pow2)
        .ok_or(QuantityError::OutOfRange)?;
    let mut div: i128 = 1;
    for _ in 0..shift {
        div = div.checked_mul(10).ok_or(QuantityError::OutOfRange)?;
    }
    Ok(div_ceil(v, div))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> String {
        Quantity::parse(s).unwrap().canonical()
    }

    #[test]
    fn canonical_forms_match_kubernetes() {
        let table = [
            ("0", "0"),
            ("0.5", "500m"),
            ("500m", "500m"),
            ("1000m", "1"),
            ("1", "1"),
            ("1.5", "1500m"),
            ("128Mi", "128Mi"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("1.5Ki", "1536"),
            ("0.5Ki", "512"),
            ("1G", "1G"),
            ("1000M", "1G"),
            ("1e3", "1e3"),
            ("1E3", "1e3"),
            ("1e-3", "1e-3"),
            ("100e-3", "100e-3"),
            ("1k", "1k"),
            ("12345", "12345"),
            ("0.0000000001", "1n"),
            ("-1", "-1"),
            ("-0.5", "-500m"),
            ("+5", "5"),
            ("1E", "1E"),
            ("1Ei", "1Ei"),
            ("7Ei", "7Ei"),
            ("8Ei", "9223372036854775807"),
            ("100Ei", "9223372036854775807"),
            ("-", "0"),
            (".", "0"),
            ("1.G", "1G"),
            ("0.1Ki", "102400m"),
            ("2000000n", "2m"),
            ("1u", "1u"),
        ];
        for (input, want) in table {
            assert_eq!(c(input), want, "canonical form of {input:?}");
        }
    }

    #[test]
    fn invalid_quantities_are_rejected() {
        for s in [
            "", "abc", "1KiB", "1 Gi", "1e", "1mi", "1K", "..", "1e3.5", "Mi1", "1Ei3", "0x10",
            "1.2.3",
        ] {
            assert!(Quantity::parse(s).is_err(), "{s:?} should be invalid");
        }
        assert_eq!(Quantity::parse("1K"), Err(QuantityError::Suffix));
        assert_eq!(Quantity::parse("1KiB"), Err(QuantityError::FormatWrong));
    }

    #[test]
    fn values_round_up() {
        assert_eq!(Quantity::parse("0.5").unwrap().milli_value(), 500);
        assert_eq!(Quantity::parse("0.0001").unwrap().milli_value(), 1);
        assert_eq!(Quantity::parse("1.5").unwrap().value(), 2);
        assert_eq!(Quantity::parse("128Mi").unwrap().value(), 128 << 20);
        assert_eq!(Quantity::parse("1G").unwrap().value(), 1_000_000_000);
    }
}
