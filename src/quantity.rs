//! Kubernetes resource quantities, parsed with the exact grammar of
//! `k8s.io/apimachinery/pkg/api/resource` in integer arithmetic.
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <signedNumber>    ::= <number> | <sign><number>
//! <sign>            ::= "+" | "-"
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= m | "" | k | M | G | T | P | E      (also u and n)
//! <decimalExponent> ::= "e" <signedInteger> | "E" <signedInteger>
//! ```
//!
//! A value is held exactly as `unscaled × 10^-scale` (binary suffixes multiply the
//! unscaled part), so `500m`, `.5Gi` and `128974848000m` compare and convert without any
//! floating point. Memory is only ever used as whole bytes, rounded up as the kubelet does
//! (`Quantity.Value()` is the ceiling).

use std::cmp::Ordering;
use std::fmt;

/// The largest byte count we accept: Kubernetes stores `Value()` in an int64.
pub(crate) const MAX_BYTES: u128 = i64::MAX as u128;

/// Why a string is not a quantity we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("quantity {0:?} does not match the Kubernetes quantity grammar")]
    Format(String),
    #[error("quantity {0:?} has an unknown suffix")]
    Suffix(String),
    #[error("quantity {0:?} is out of range")]
    Range(String),
    #[error("quantity {0:?} is negative")]
    Negative(String),
}

/// An exact, non-negative quantity together with the text it was parsed from.
#[derive(Debug, Clone)]
pub struct Quantity {
    text: String,
    /// `value = unscaled / 10^scale`, normalised so that `unscaled % 10 != 0` when `scale > 0`.
    unscaled: u128,
    scale: u32,
}

impl Quantity {
    /// Parses a Kubernetes quantity. Negative values are rejected: memory cannot be negative
    /// and the API server refuses such pods anyway.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let Exact {
            negative,
            unscaled,
            scale,
        } = parse_exact(text)?;
        if negative && unscaled != 0 {
            return Err(QuantityError::Negative(text.to_owned()));
        }
        let q = Quantity {
            text: text.to_owned(),
            unscaled,
            scale,
        };
        // Every quantity we keep must be convertible to int64 bytes.
        if q.ceil_bytes_u128() > MAX_BYTES {
            return Err(QuantityError::Range(text.to_owned()));
        }
        Ok(q)
    }

    /// The text this quantity was parsed from, unchanged.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whole bytes, rounded up (what the kubelet hands to a `resourceFieldRef` with divisor 1).
    pub(crate) fn bytes(&self) -> u64 {
        // Bounded by MAX_BYTES at construction.
        self.ceil_bytes_u128() as u64
    }

    /// `floor(bytes * percent / 100)`, in integer arithmetic.
    pub(crate) fn percent_of_bytes(&self, percent: u8) -> u64 {
        (u128::from(self.bytes()) * u128::from(percent) / 100) as u64
    }

    /// Whether the value is exactly zero.
    pub(crate) fn is_zero(&self) -> bool {
        self.unscaled == 0
    }

    fn ceil_bytes_u128(&self) -> u128 {
        let div = 10u128.pow(self.scale);
        self.unscaled.div_ceil(div)
    }

    /// Compares two quantities by exact value.
    pub fn cmp_value(&self, other: &Quantity) -> Ordering {
        // Align scales; fall back to a long comparison when the product overflows.
        let (a, b) = (self, other);
        if a.scale == b.scale {
            return a.unscaled.cmp(&b.unscaled);
        }
        let (lo, hi, swapped) = if a.scale < b.scale {
            (a, b, false)
        } else {
            (b, a, true)
        };
        let shift = 10u128.checked_pow(hi.scale - lo.scale);
        let ord = match shift.and_then(|s| lo.unscaled.checked_mul(s)) {
            Some(lo_aligned) => lo_aligned.cmp(&hi.unscaled),
            // lo.unscaled * 10^k overflowed u128, so it is far larger than hi.unscaled
            // (which is itself < u128::MAX); unless lo is zero, which cannot overflow.
            None => Ordering::Greater,
        };
        if swapped { ord.reverse() } else { ord }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_value(other) == Ordering::Equal
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

/// A number as written, exactly: `value = unscaled / 10^scale`, with its sign.
struct Exact {
    negative: bool,
    unscaled: u128,
    scale: u32,
}

/// The parts of a quantity's text: `<sign><digits>.<digits><suffix>`.
struct Parts<'a> {
    negative: bool,
    int_digits: &'a str,
    frac_digits: &'a str,
    suffix: &'a str,
}

/// Parses `text` exactly, in the steps of the grammar: split it, read the digits, apply the
/// suffix, normalise the scale.
fn parse_exact(text: &str) -> Result<Exact, QuantityError> {
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let parts = Parts::split(text)?;
    // Mantissa as an exact integer with `scale` fractional digits.
    let mut unscaled: u128 = 0;
    for d in parts.int_digits.bytes().chain(parts.frac_digits.bytes()) {
        unscaled = unscaled
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(d - b'0')))
            .ok_or_else(|| QuantityError::Range(text.to_owned()))?;
    }
    // `scale` may go negative through positive exponents or large suffixes.
    let scale = parts.frac_digits.len() as i64;
    let (unscaled, scale) = apply_suffix(text, parts.suffix, unscaled, scale)?;
    normalise(text, parts.negative, unscaled, scale)
}

impl<'a> Parts<'a> {
    fn split(text: &'a str) -> Result<Self, QuantityError> {
        let (negative, unsigned) = match text.as_bytes()[0] {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let digits = |s: &'a str| {
            let end = s.bytes().take_while(u8::is_ascii_digit).count();
            s.split_at(end)
        };
        let (int_digits, rest) = digits(unsigned);
        let (frac_digits, suffix) = match rest.strip_prefix('.') {
            Some(after_point) => digits(after_point),
            None => ("", rest),
        };
        // <number> needs at least one digit on one side of the point.
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(QuantityError::Format(text.to_owned()));
        }
        Ok(Parts {
            negative,
            int_digits,
            frac_digits,
            suffix,
        })
    }
}

/// The value with its suffix applied: a decimal suffix or an exponent moves the scale, a
/// binary suffix multiplies the unscaled part.
fn apply_suffix(
    text: &str,
    suffix: &str,
    unscaled: u128,
    scale: i64,
) -> Result<(u128, i64), QuantityError> {
    let format = || QuantityError::Format(text.to_owned());
    let range = || QuantityError::Range(text.to_owned());
    let decimal = match suffix {
        "" => 0,
        "n" => -9,
        "u" => -6,
        "m" => -3,
        "k" => 3,
        "M" => 6,
        "G" => 9,
        "T" => 12,
        "P" => 15,
        "E" => 18,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = match suffix {
                "Ki" => 10,
                "Mi" => 20,
                "Gi" => 30,
                "Ti" => 40,
                "Pi" => 50,
                _ => 60,
            };
            let unscaled = unscaled.checked_mul(1u128 << power).ok_or_else(range)?;
            return Ok((unscaled, scale));
        }
        _ if suffix.starts_with(['e', 'E']) => {
            let exp = &suffix[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format());
            }
            // Kubernetes limits exponents to int32; anything this large overflows anyway.
            let e: i64 = exp.parse().map_err(|_| range())?;
            if e.unsigned_abs() > i32::MAX as u64 {
                return Err(range());
            }
            e
        }
        // Distinguish "1 Gi" / "1.5.5" (not a quantity at all) from "1Mb" (bad suffix).
        _ if suffix.bytes().all(|b| b.is_ascii_alphabetic()) => {
            return Err(QuantityError::Suffix(text.to_owned()));
        }
        _ => return Err(format()),
    };
    Ok((unscaled, scale - decimal))
}

/// The value with no trailing zeros in a fractional scale and no negative scale.
fn normalise(
    text: &str,
    negative: bool,
    mut unscaled: u128,
    mut scale: i64,
) -> Result<Exact, QuantityError> {
    if unscaled == 0 {
        return Ok(Exact {
            negative,
            unscaled: 0,
            scale: 0,
        });
    }
    while scale > 0 && unscaled.is_multiple_of(10) {
        unscaled /= 10;
        scale -= 1;
    }
    if scale < 0 {
        let range = || QuantityError::Range(text.to_owned());
        let factor = u32::try_from(-scale)
            .ok()
            .and_then(|s| 10u128.checked_pow(s))
            .ok_or_else(range)?;
        unscaled = unscaled.checked_mul(factor).ok_or_else(range)?;
        scale = 0;
    }
    // A scale this deep means a value far below one byte; 10^38 still fits u128.
    if scale > 38 {
        return Ok(Exact {
            negative,
            unscaled: 1,
            scale: 38,
        });
    }
    Ok(Exact {
        negative,
        unscaled,
        scale: scale as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, bytes rounded up)
    const VALID: &[(&str, u64)] = &[
        ("0", 0),
        ("1", 1),
        ("1.5Gi", 1_610_612_736),
        (".5Gi", 536_870_912),
        ("+1Gi", 1_073_741_824),
        ("1e9", 1_000_000_000),
        ("1E3", 1_000),
        ("1e+3", 1_000),
        ("12e-1", 2),
        ("500M", 500_000_000),
        ("128974848000m", 128_974_848),
        ("500m", 1),
        ("1.", 1),
        ("1Ki", 1024),
        ("1Mi", 1_048_576),
        ("512Mi", 536_870_912),
        ("1Ti", 1_099_511_627_776),
        ("1Pi", 1_125_899_906_842_624),
        ("7Ei", 8_070_450_532_247_928_832),
        ("1k", 1_000),
        ("1G", 1_000_000_000),
        ("1T", 1_000_000_000_000),
        ("1P", 1_000_000_000_000_000),
        ("9E", 9_000_000_000_000_000_000),
        ("1500u", 1),
        ("1n", 1),
        ("0.001", 1),
        ("00012Mi", 12_582_912),
        ("-0", 0),
        ("123456789", 123_456_789),
        ("9223372036854775807", 9_223_372_036_854_775_807),
    ];

    const INVALID: &[&str] = &[
        "", "1.5.5", "Gi", "1 Gi", " 1Gi", "1Gi ", "1Mb", "1e400", "1e", "1e+", "1ee3", ".", "+",
        "-", "1.5e3.5", "1GiB", "1gi", "1K", "Mi1", "1e1Gi", "-1Gi", "16Ei", "10E", "1e19",
        "1,5Gi", "0x10",
    ];

    #[test]
    fn parses_kubernetes_quantities_to_bytes() {
        for (text, bytes) in VALID {
            let q = Quantity::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(q.bytes(), *bytes, "{text}");
            assert_eq!(q.as_str(), *text);
        }
    }

    #[test]
    fn rejects_invalid_quantities() {
        for text in INVALID {
            assert!(Quantity::parse(text).is_err(), "{text:?} should not parse");
        }
    }

    #[test]
    fn names_the_kind_of_error() {
        let cases = [
            ("", QuantityError::Empty),
            ("1Mb", QuantityError::Suffix("1Mb".into())),
            ("1 Gi", QuantityError::Format("1 Gi".into())),
            ("1e400", QuantityError::Range("1e400".into())),
            ("-1", QuantityError::Negative("-1".into())),
        ];
        for (text, error) in cases {
            assert_eq!(Quantity::parse(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn compares_by_exact_value() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("1G"), q("1e9"));
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q(".5Gi"), q("512Mi"));
        assert_eq!(q("500m").cmp_value(&q("1")), Ordering::Less);
        assert_eq!(q("1001m").cmp_value(&q("1")), Ordering::Greater);
        assert_eq!(q("1n").cmp_value(&q("0")), Ordering::Greater);
        assert_eq!(q("1Mi").cmp_value(&q("1M")), Ordering::Greater);
        assert_eq!(q("7Ei").cmp_value(&q("1n")), Ordering::Greater);
    }

    #[test]
    fn percent_literal_is_floor_in_integer_arithmetic() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        // 512Mi * 90 / 100 = 483183820.8 → 483183820
        assert_eq!(q("512Mi").percent_of_bytes(90), 483_183_820);
        assert_eq!(q("512Mi").percent_of_bytes(100), 536_870_912);
        assert_eq!(q("1").percent_of_bytes(99), 0);
        assert_eq!(q("3").percent_of_bytes(50), 1);
        // Near int64 max the product must not overflow or lose precision.
        assert_eq!(
            q("9223372036854775807").percent_of_bytes(95),
            8_762_203_435_012_037_016
        );
    }
}
