//! JavaScript number semantics for the mapping layer.
//!
//! The reference implementation runs on JavaScript, so every place where a number
//! becomes text (`@template`, `@replace`, `@json`, string coercion) or text becomes
//! a number (`Number("42")`) must follow the ECMAScript rules rather than Rust's
//! `Display`/`FromStr`. This module holds those conversions:
//!
//! - [`js_number_to_string`]: `Number.prototype.toString()` / `String(n)` (shortest
//!   round-trip digits, exponent form outside `1e-7 < |n| < 1e21`);
//! - [`js_number_from_str`]: `Number(string)` (JS whitespace trimming, hex/octal/binary
//!   literals, `Infinity`, `NaN` for anything else);
//! - [`f64_to_json`] / [`json_number_to_f64`]: moving between `f64` and
//!   `serde_json::Value` the way `JSON.stringify` sees numbers (integral values stay
//!   integers, non-finite values become `null`);
//! - [`js_trim`]: `String.prototype.trim()`, which uses JavaScript's whitespace set
//!   (it differs from Rust's `str::trim`, e.g. for U+FEFF and U+0085).
//!
//! Invariants: every function is pure, total and panic-free on any input.

use serde_json::{Number, Value};

/// Largest integer that a JavaScript number holds exactly (2^53).
const MAX_SAFE_INTEGER_F64: f64 = 9_007_199_254_740_992.0;

/// Whether `c` is JavaScript whitespace (WhiteSpace or LineTerminator), the set used
/// by `String.prototype.trim` and `Number(string)`.
pub fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{0009}'
            | '\u{000A}'
            | '\u{000B}'
            | '\u{000C}'
            | '\u{000D}'
            | '\u{0020}'
            | '\u{00A0}'
            | '\u{1680}'
            | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\u{FEFF}'
    )
}

/// JavaScript `String.prototype.trim()`.
pub fn js_trim(s: &str) -> &str {
    s.trim_matches(is_js_whitespace)
}

/// JavaScript `Number(string)`.
///
/// Leading and trailing JS whitespace is ignored; the empty string is `0`;
/// `0x`/`0o`/`0b` prefixes (without sign) read hexadecimal/octal/binary;
/// `Infinity` may carry a sign; decimal literals accept `.5`, `5.`, `1e3`, `-1E-3`.
/// Anything else (including `1_000`, `-0x10`, `inf`, `nan`) is `NaN`.
pub fn js_number_from_str(s: &str) -> f64 {
    let t = js_trim(s);
    if t.is_empty() {
        return 0.0;
    }
    for (prefixes, bits) in [(["0x", "0X"], 4u32), (["0o", "0O"], 3), (["0b", "0B"], 1)] {
        for prefix in prefixes {
            if let Some(digits) = t.strip_prefix(prefix) {
                return parse_power_of_two_radix(digits, bits).unwrap_or(f64::NAN);
            }
        }
    }
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..).unwrap_or("")),
        Some(b'+') => (false, t.get(1..).unwrap_or("")),
        _ => (false, t),
    };
    let magnitude = if body == "Infinity" {
        f64::INFINITY
    } else if is_decimal_literal(body) {
        match body.parse::<f64>() {
            Ok(v) => v,
            Err(_) => return f64::NAN,
        }
    } else {
        return f64::NAN;
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// `digits+ ('.' digits*)? | '.' digits+`, then an optional exponent `[eE][+-]?digits+`.
fn is_decimal_literal(s: &str) -> bool {
    let b = s.as_bytes();
    let digits_from = |i: usize| {
        b.get(i..)
            .map_or(0, |rest| rest.iter().take_while(|c| c.is_ascii_digit()).count())
    };
    let int_digits = digits_from(0);
    let mut i = int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        frac_digits = digits_from(i + 1);
        i += 1 + frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = digits_from(i);
        if exp_digits == 0 {
            return false;
        }
        i += exp_digits;
    }
    i == b.len()
}

/// Reads digits of radix `2^bits` into the nearest `f64` (round half to even), like
/// JavaScript does for `0x...` literals of any length.
fn parse_power_of_two_radix(digits: &str, bits: u32) -> Option<f64> {
    if digits.is_empty() {
        return None;
    }
    let radix = 1u32 << bits;
    let mut mantissa: u64 = 0;
    let mut mantissa_bits: u32 = 0;
    let mut dropped_bits: i32 = 0;
    let mut sticky = false;
    for c in digits.chars() {
        let d = c.to_digit(radix)?;
        for shift in (0..bits).rev() {
            let bit = u64::from((d >> shift) & 1);
            if mantissa_bits == 0 && bit == 0 {
                continue;
            }
            if mantissa_bits < 64 {
                mantissa = (mantissa << 1) | bit;
                mantissa_bits += 1;
            } else {
                dropped_bits = dropped_bits.saturating_add(1);
                sticky |= bit == 1;
            }
        }
    }
    if mantissa_bits <= 53 {
        // Exact: at most 53 significant bits and nothing dropped.
        return Some(mantissa as f64);
    }
    let shift = mantissa_bits - 53;
    let mut top = mantissa >> shift;
    let rest = mantissa & ((1u64 << shift) - 1);
    let half = 1u64 << (shift - 1);
    if rest > half || (rest == half && (sticky || top & 1 == 1)) {
        top += 1;
    }
    let exponent = i32::try_from(shift).unwrap_or(i32::MAX).saturating_add(dropped_bits);
    Some(top as f64 * 2f64.powi(exponent))
}

/// JavaScript `String(n)` / `Number.prototype.toString()`.
pub fn js_number_to_string(n: f64) -> String {
    if n.is_nan() {
        return "NaN".to_owned();
    }
    if n == 0.0 {
        return "0".to_owned();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, like JS does.
    let sci = format!("{:e}", n.abs());
    let (mantissa, exponent) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let point = exponent + 1; // position of the decimal point after the first digit run
    let mut out = String::with_capacity(digits.len() + 8);
    if n < 0.0 {
        out.push('-');
    }
    if k <= point && point <= 21 {
        out.push_str(&digits);
        for _ in 0..(point - k) {
            out.push('0');
        }
    } else if 0 < point && point <= 21 {
        let split = usize::try_from(point).unwrap_or(0);
        out.push_str(digits.get(..split).unwrap_or(""));
        out.push('.');
        out.push_str(digits.get(split..).unwrap_or(""));
    } else if -6 < point && point <= 0 {
        out.push_str("0.");
        for _ in 0..(-point) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let mut chars = digits.chars();
        if let Some(first) = chars.next() {
            out.push(first);
        }
        let rest: String = chars.collect();
        if !rest.is_empty() {
            out.push('.');
            out.push_str(&rest);
        }
        out.push('e');
        let e = point - 1;
        out.push(if e < 0 { '-' } else { '+' });
        out.push_str(&e.unsigned_abs().to_string());
    }
    out
}

/// The value a JavaScript engine would hold for a JSON number.
pub fn json_number_to_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

/// `f64` to JSON the way `JSON.stringify` prints it: integral values within the
/// `i64` range become integers (so `5.0` is `5` and `-0` is `0`), other finite values
/// stay floats, and `NaN`/`Infinity` become `null`.
pub fn f64_to_json(n: f64) -> Value {
    if !n.is_finite() {
        return Value::Null;
    }
    // 2^63 as f64; integral values in [-2^63, 2^63) fit an `i64` exactly.
    let two_pow_63 = 2f64.powi(63);
    if n.fract() == 0.0 && (-two_pow_63..two_pow_63).contains(&n) {
        return Value::from(n as i64);
    }
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}

/// Normalises a JSON number to what JavaScript would hold: integers beyond 2^53 and
/// floats are rounded through `f64` (so `1.0` becomes `1`).
pub fn normalize_json_number(n: &Number) -> Value {
    if let Some(i) = n.as_i64() {
        if (i as f64).abs() <= MAX_SAFE_INTEGER_F64 {
            return Value::Number(n.clone());
        }
    }
    f64_to_json(json_number_to_f64(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_from_str_table() {
        let cases: &[(&str, f64)] = &[
            ("5", 5.0),
            ("", 0.0),
            ("   ", 0.0),
            (" 7 ", 7.0),
            ("\u{FEFF}\u{A0}8\n", 8.0),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("-2.5", -2.5),
            ("+2.5", 2.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("0x10", 16.0),
            ("0X1f", 31.0),
            ("0o17", 15.0),
            ("0b101", 5.0),
            ("Infinity", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
            ("+Infinity", f64::INFINITY),
            ("1e400", f64::INFINITY),
            ("-0", -0.0),
            ("007", 7.0),
        ];
        for (input, expected) in cases {
            let got = js_number_from_str(input);
            assert!(
                got == *expected && got.is_sign_negative() == expected.is_sign_negative(),
                "{input:?} -> {got}, expected {expected}"
            );
        }
        for input in [
            "abc", "-0x10", "1_000", "0x", "0xg", "inf", "infinity", "NaN", "nan", ".", "e5", "1e", "1e+", "--1",
            "1 2", "0b2", "0o8", "1.2.3", "١",
        ] {
            assert!(js_number_from_str(input).is_nan(), "{input:?} should be NaN");
        }
    }

    #[test]
    fn hex_rounds_to_nearest_even() {
        // 2^53 + 1 rounds down to 2^53 (tie to even), 2^53 + 3 rounds up.
        assert_eq!(js_number_from_str("0x20000000000001"), 9_007_199_254_740_992.0);
        assert_eq!(js_number_from_str("0x20000000000003"), 9_007_199_254_740_996.0);
        assert_eq!(js_number_from_str("0xFFFFFFFFFFFFFFFFFFFF"), 1.2089258196146292e24);
        assert_eq!(js_number_from_str(&format!("0x1{}", "0".repeat(300))), f64::INFINITY);
    }

    #[test]
    fn number_to_string_table() {
        let cases: &[(f64, &str)] = &[
            (42.0, "42"),
            (0.5, "0.5"),
            (-0.0, "0"),
            (0.0, "0"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123_456_789_012_345_680_000.0, "123456789012345680000"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.5e-7, "1.5e-7"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (-1.5, "-1.5"),
            (5.5, "5.5"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (-1234.5678, "-1234.5678"),
            (100.0, "100"),
            (2f64.powi(53), "9007199254740992"),
        ];
        for (input, expected) in cases {
            assert_eq!(js_number_to_string(*input), *expected, "{input}");
        }
    }

    #[test]
    fn f64_to_json_keeps_integers() {
        assert_eq!(f64_to_json(5.0).to_string(), "5");
        assert_eq!(f64_to_json(-0.0).to_string(), "0");
        assert_eq!(f64_to_json(5.5).to_string(), "5.5");
        assert_eq!(f64_to_json(f64::NAN), Value::Null);
        assert_eq!(f64_to_json(f64::INFINITY), Value::Null);
        assert_eq!(f64_to_json(1e300), serde_json::json!(1e300));
        let big: Number = serde_json::from_str("12345678901234567890").unwrap();
        assert_eq!(json_number_to_f64(&big), 12_345_678_901_234_567_000.0);
        assert_eq!(
            normalize_json_number(&big),
            serde_json::json!(12_345_678_901_234_567_000.0)
        );
    }

    #[test]
    fn trim_uses_js_whitespace() {
        assert_eq!(js_trim("\u{FEFF} a \u{3000}"), "a");
        assert_eq!(js_trim("\u{85}a"), "\u{85}a");
    }

    proptest::proptest! {
        #[test]
        fn from_str_never_panics(s in ".*") {
            let _ = js_number_from_str(&s);
        }

        #[test]
        fn to_string_round_trips(bits in proptest::num::u64::ANY) {
            let n = f64::from_bits(bits);
            let text = js_number_to_string(n);
            let back = js_number_from_str(&text);
            if n.is_nan() {
                proptest::prop_assert!(back.is_nan());
            } else {
                proptest::prop_assert_eq!(back, n);
            }
        }
    }
}
