//! The few JavaScript conversions the reference relies on: `Number(string)`,
//! `String(number)`, array-index keys, and which property names every object
//! (or array, string, number, boolean) inherits from its prototype.

/// Property names every JavaScript object inherits (`Object.prototype`).
const OBJECT_PROTO: &[&str] = &[
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
    "__proto__",
    "constructor",
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toLocaleString",
    "toString",
    "valueOf",
];

/// Methods of `Array.prototype` (as of Node 20), without `length`.
const ARRAY_PROTO: &[&str] = &[
    "at",
    "concat",
    "copyWithin",
    "entries",
    "every",
    "fill",
    "filter",
    "find",
    "findIndex",
    "findLast",
    "findLastIndex",
    "flat",
    "flatMap",
    "forEach",
    "includes",
    "indexOf",
    "join",
    "keys",
    "lastIndexOf",
    "map",
    "pop",
    "push",
    "reduce",
    "reduceRight",
    "reverse",
    "shift",
    "slice",
    "some",
    "sort",
    "splice",
    "toReversed",
    "toSorted",
    "toSpliced",
    "unshift",
    "values",
    "with",
];

/// Methods of `String.prototype` (as of Node 20), without `length`.
const STRING_PROTO: &[&str] = &[
    "anchor",
    "at",
    "big",
    "blink",
    "bold",
    "charAt",
    "charCodeAt",
    "codePointAt",
    "concat",
    "endsWith",
    "fixed",
    "fontcolor",
    "fontsize",
    "includes",
    "indexOf",
    "isWellFormed",
    "italics",
    "lastIndexOf",
    "link",
    "localeCompare",
    "match",
    "matchAll",
    "normalize",
    "padEnd",
    "padStart",
    "repeat",
    "replace",
    "replaceAll",
    "search",
    "slice",
    "small",
    "split",
    "startsWith",
    "strike",
    "sub",
    "substr",
    "substring",
    "sup",
    "toLocaleLowerCase",
    "toLocaleUpperCase",
    "toLowerCase",
    "toUpperCase",
    "toWellFormed",
    "trim",
    "trimEnd",
    "trimLeft",
    "trimRight",
    "trimStart",
];

/// Methods of `Number.prototype`.
const NUMBER_PROTO: &[&str] = &["toExponential", "toFixed", "toPrecision"];

/// Which prototypes provide a property name; computed once per path segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Inherited {
    /// Every object, array, string, number, boolean and function has it.
    pub(crate) object: bool,
    pub(crate) array: bool,
    pub(crate) string: bool,
    pub(crate) number: bool,
}

impl Inherited {
    pub(crate) fn of(name: &str) -> Self {
        Inherited {
            object: OBJECT_PROTO.contains(&name),
            array: ARRAY_PROTO.contains(&name),
            string: STRING_PROTO.contains(&name),
            number: NUMBER_PROTO.contains(&name),
        }
    }
}

/// True for names a plain JavaScript object literal inherits.
pub(crate) fn is_object_proto_name(name: &str) -> bool {
    OBJECT_PROTO.contains(&name)
}

/// The array index a property key denotes (`"0"`, `"12"`; not `"01"`, `"-1"`).
pub(crate) fn array_index(key: &str) -> Option<usize> {
    let bytes = key.as_bytes();
    let canonical =
        !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) && (bytes.len() == 1 || bytes.first() != Some(&b'0'));
    if !canonical || bytes.len() > 10 {
        return None;
    }
    let value: u64 = key.parse().ok()?;
    if value >= u64::from(u32::MAX) {
        return None;
    }
    usize::try_from(value).ok()
}

/// JavaScript's white space and line terminators, which `Number()` trims.
fn is_js_space(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{A}' | '\u{B}' | '\u{C}' | '\u{D}' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\u{FEFF}'
    )
}

/// JavaScript's `Number(text)`.
pub(crate) fn string_to_number(text: &str) -> f64 {
    let trimmed = text.trim_matches(is_js_space);
    if trimmed.is_empty() {
        return 0.0;
    }
    match trimmed {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    let bytes = trimmed.as_bytes();
    if bytes.len() > 2 && bytes.first() == Some(&b'0') {
        let radix = match bytes.get(1) {
            Some(b'x' | b'X') => Some(16),
            Some(b'o' | b'O') => Some(8),
            Some(b'b' | b'B') => Some(2),
            _ => None,
        };
        if let Some(radix) = radix {
            return radix_integer(trimmed.get(2..).unwrap_or(""), radix);
        }
    }
    if is_decimal_literal(bytes) {
        trimmed.parse::<f64>().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

fn radix_integer(digits: &str, radix: u32) -> f64 {
    if digits.is_empty() {
        return f64::NAN;
    }
    if let Ok(exact) = u128::from_str_radix(digits, radix) {
        // `as` rounds to the nearest representable value, like JavaScript.
        return exact as f64;
    }
    let mut value = 0.0_f64;
    for c in digits.chars() {
        match c.to_digit(radix) {
            Some(d) => value = value * f64::from(radix) + f64::from(d),
            None => return f64::NAN,
        }
    }
    value
}

/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`
fn is_decimal_literal(bytes: &[u8]) -> bool {
    let mut i = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_start = i;
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let mut digits = i - int_start;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return false;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == bytes.len()
}

/// JavaScript's `String(number)`.
pub(crate) fn number_to_string(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_string();
    }
    if value == 0.0 {
        return "0".to_string();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if value < 0.0 {
        return format!("-{}", number_to_string(-value));
    }
    // Shortest round-trip digits and exponent, e.g. "1.2345e-7".
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let k = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    let n = exponent + 1;
    if k <= n && n <= 21 {
        let zeros = usize::try_from(n - k).unwrap_or(0);
        format!("{digits}{}", "0".repeat(zeros))
    } else if 0 < n && n <= 21 {
        let split = usize::try_from(n).unwrap_or(0);
        let (int_part, frac_part) = digits.split_at(split.min(digits.len()));
        format!("{int_part}.{frac_part}")
    } else if -6 < n && n <= 0 {
        let zeros = usize::try_from(-n).unwrap_or(0);
        format!("0.{}{digits}", "0".repeat(zeros))
    } else {
        let sign = if n - 1 < 0 { '-' } else { '+' };
        let exp = (n - 1).abs();
        let (first, rest) = digits.split_at(1.min(digits.len()));
        if rest.is_empty() {
            format!("{first}e{sign}{exp}")
        } else {
            format!("{first}.{rest}e{sign}{exp}")
        }
    }
}

/// Removes the first UTF-16 unit of `text`, like JavaScript's `slice(1)`.
/// When that splits a surrogate pair, the low surrogate left over is returned
/// apart, since a Rust string cannot hold it.
pub(crate) fn drop_first_unit(text: &str) -> (Option<u16>, String) {
    let mut chars = text.chars();
    match chars.next() {
        None => (None, String::new()),
        Some(c) if c.len_utf16() == 2 => {
            let mut units = [0_u16; 2];
            c.encode_utf16(&mut units);
            let [_, low] = units;
            (Some(low), chars.as_str().to_string())
        }
        Some(_) => (None, chars.as_str().to_string()),
    }
}

/// Removes the last UTF-16 unit of `text`, like JavaScript's `slice(0, -1)`.
/// Only used on texts ending in an ASCII character.
pub(crate) fn drop_last_unit(text: &str) -> String {
    let mut chars = text.chars();
    chars.next_back();
    chars.as_str().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_to_string_matches_javascript() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (123.0, "123"),
            (0.1, "0.1"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (2.5e300, "2.5e+300"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (0.000123, "0.000123"),
            (5e-324, "5e-324"),
        ];
        for (value, expected) in cases {
            assert_eq!(number_to_string(*value), *expected, "{value}");
        }
    }

    #[test]
    fn string_to_number_matches_javascript() {
        let cases: &[(&str, f64)] = &[
            ("", 0.0),
            ("  ", 0.0),
            ("10", 10.0),
            (" 10 ", 10.0),
            ("+5", 5.0),
            ("-5", -5.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("-.5", -0.5),
            ("1e3", 1000.0),
            ("1E-1", 0.1),
            ("0x10", 16.0),
            ("0b101", 5.0),
            ("0o17", 15.0),
            ("Infinity", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
            ("007", 7.0),
        ];
        for (text, expected) in cases {
            assert_eq!(string_to_number(text), *expected, "{text:?}");
        }
        for text in [
            "-", "+", ".", "-.", "abc", "1e", "0x", "-0x10", "inf", "nan", "NaN", "1_000", "1 2", "'10'", "true",
        ] {
            assert!(string_to_number(text).is_nan(), "{text:?}");
        }
    }

    #[test]
    fn array_index_is_canonical() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("12"), Some(12));
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("-1"), None);
        assert_eq!(array_index("1.0"), None);
        assert_eq!(array_index(""), None);
        assert_eq!(array_index("4294967295"), None);
        assert_eq!(array_index("99999999999"), None);
    }

    #[test]
    fn slicing_units() {
        assert_eq!(drop_first_unit("*ed"), (None, "ed".to_string()));
        assert_eq!(drop_first_unit(""), (None, String::new()));
        assert_eq!(drop_first_unit("\u{1F600}x"), (Some(0xDE00), "x".to_string()));
        assert_eq!(drop_last_unit("abc*"), "abc");
        assert_eq!(drop_last_unit(""), "");
    }
}
