//! `$browser` and `$browser_version` from a user-agent string, as the reference's
//! Mixpanel destination computes them (its `getBrowser` / `getBrowserVersion`).
//!
//! Pure and total: plain substring tests and a hand-written scan, no panics on any
//! input. The caller sends these only when a user agent is present.
//!
//! Rules reproduced:
//! * [`browser`]: the first rule that matches, in this order (all substring tests
//!   are case-sensitive except the BlackBerry one, which ignores ASCII case only,
//!   like a JavaScript `/.../i` regex without the `u` flag):
//!   ` OPR/` (`Opera Mini` if the agent contains `Mini`, else `Opera`);
//!   `BlackBerry`|`PlayBook`|`BB10` -> `BlackBerry`; `IEMobile`|`WPDesktop` ->
//!   `Internet Explorer Mobile`; `SamsungBrowser/` -> `Samsung Internet`;
//!   `Edge`|`Edg/` -> `Microsoft Edge`; `FBIOS` -> `Facebook Mobile`; `Chrome`;
//!   `CriOS` -> `Chrome iOS`; `UCWEB`|`UCBrowser` -> `UC Browser`; `FxiOS` ->
//!   `Firefox iOS`; `Safari` (`Mobile Safari` with `iPhone`); `Android` ->
//!   `Android Mobile`; `Konqueror`; `Firefox`; `MSIE`|`Trident/` ->
//!   `Internet Explorer`; `Gecko` -> `Mozilla`; otherwise `""`.
//! * [`browser_version`]: the browser's pattern `PREFIX(\d+(\.\d+)+)`, first match
//!   from the left, version = the whole dotted number (at least one dot, ASCII
//!   digits, as greedy as the regex): Internet Explorer Mobile `rv:`; Microsoft
//!   Edge `Edge/` or `Edg/`; Chrome `Chrome/`; Chrome iOS `CriOS/`; UC Browser
//!   `UCBrowser/` or `UCWEB/`; Safari and Mobile Safari `Version/`; Opera `Opera/`
//!   or `OPR/`; Firefox `Firefox/`; Firefox iOS `FxiOS/`; Konqueror `Konqueror:`;
//!   BlackBerry `BlackBerry `; Android Mobile `android` plus one JavaScript white
//!   space character (lower-case `android` only); Samsung Internet
//!   `SamsungBrowser/`; Internet Explorer `rv:` or `MSIE `; Mozilla `rv:`. No
//!   pattern (Opera Mini, Facebook Mobile, `""`) or no match: `None`.

pub const OPERA: &str = "Opera";
pub const OPERA_MINI: &str = "Opera Mini";
pub const BLACKBERRY: &str = "BlackBerry";
pub const IE_MOBILE: &str = "Internet Explorer Mobile";
pub const SAMSUNG_INTERNET: &str = "Samsung Internet";
pub const EDGE: &str = "Microsoft Edge";
pub const FACEBOOK_MOBILE: &str = "Facebook Mobile";
pub const CHROME: &str = "Chrome";
pub const CHROME_IOS: &str = "Chrome iOS";
pub const UC_BROWSER: &str = "UC Browser";
pub const FIREFOX_IOS: &str = "Firefox iOS";
pub const MOBILE_SAFARI: &str = "Mobile Safari";
pub const SAFARI: &str = "Safari";
pub const ANDROID_MOBILE: &str = "Android Mobile";
pub const KONQUEROR: &str = "Konqueror";
pub const FIREFOX: &str = "Firefox";
pub const INTERNET_EXPLORER: &str = "Internet Explorer";
pub const MOZILLA: &str = "Mozilla";

/// The browser name the reference derives from a user agent (`""` when none).
pub fn browser(ua: &str) -> &'static str {
    let has = |needle: &str| ua.contains(needle);
    if has(" OPR/") {
        return if has("Mini") { OPERA_MINI } else { OPERA };
    }
    let lower = ua.to_ascii_lowercase();
    if ["blackberry", "playbook", "bb10"].iter().any(|n| lower.contains(n)) {
        return BLACKBERRY;
    }
    let rules: [(&[&str], &'static str); 14] = [
        (&["IEMobile", "WPDesktop"], IE_MOBILE),
        (&["SamsungBrowser/"], SAMSUNG_INTERNET),
        (&["Edge", "Edg/"], EDGE),
        (&["FBIOS"], FACEBOOK_MOBILE),
        (&["Chrome"], CHROME),
        (&["CriOS"], CHROME_IOS),
        (&["UCWEB", "UCBrowser"], UC_BROWSER),
        (&["FxiOS"], FIREFOX_IOS),
        (&["Safari"], SAFARI),
        (&["Android"], ANDROID_MOBILE),
        (&["Konqueror"], KONQUEROR),
        (&["Firefox"], FIREFOX),
        (&["MSIE", "Trident/"], INTERNET_EXPLORER),
        (&["Gecko"], MOZILLA),
    ];
    for (needles, name) in rules {
        if needles.iter().any(|n| has(n)) {
            if name == SAFARI && has("iPhone") {
                return MOBILE_SAFARI;
            }
            return name;
        }
    }
    ""
}

/// The `$browser_version` the reference sends for `ua`, given `browser(ua)`:
/// a dotted version string such as `"9.0"`, `"18.19041"` or `"106.0.0.0"`.
pub fn browser_version(ua: &str, browser: &str) -> Option<String> {
    let prefixes: &[&str] = match browser {
        IE_MOBILE | MOZILLA => &["rv:"],
        EDGE => &["Edge/", "Edg/"],
        CHROME => &["Chrome/"],
        CHROME_IOS => &["CriOS/"],
        UC_BROWSER => &["UCBrowser/", "UCWEB/"],
        SAFARI | MOBILE_SAFARI => &["Version/"],
        OPERA => &["Opera/", "OPR/"],
        FIREFOX => &["Firefox/"],
        FIREFOX_IOS => &["FxiOS/"],
        KONQUEROR => &["Konqueror:"],
        BLACKBERRY => &["BlackBerry "],
        SAMSUNG_INTERNET => &["SamsungBrowser/"],
        INTERNET_EXPLORER => &["rv:", "MSIE "],
        ANDROID_MOBILE => return first_version(ua, android_prefix_len),
        _ => return None,
    };
    first_version_after(ua, prefixes)
}

/// [`first_version`] for a list of ASCII prefixes (no two of which match at
/// one position), jumping from one occurrence of a prefix to the next
/// instead of trying every position.
fn first_version_after(ua: &str, prefixes: &[&str]) -> Option<String> {
    let mut from = 0;
    loop {
        let rest = ua.get(from..)?;
        let (at, len) = prefixes
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (from + i, p.len())))
            .min_by_key(|&(at, _)| at)?;
        if let Some(version) = ua.get(at + len..).and_then(dotted_number) {
            return Some(version.to_owned());
        }
        // The prefix starts with an ASCII byte: the next one starts a character.
        from = at + 1;
    }
}

/// `android` followed by one character of JavaScript's `\s`.
fn android_prefix_len(rest: &str) -> Option<usize> {
    let after = rest.strip_prefix("android")?;
    let c = after.chars().next()?;
    is_js_whitespace(c).then(|| "android".len() + c.len_utf8())
}

/// JavaScript's `\s`: WhiteSpace and LineTerminator code points.
fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\u{FEFF}'
    )
}

/// The leftmost position where `prefix_len` matches and a dotted number follows,
/// like JavaScript's `RegExp.prototype.exec` on `PREFIX(\d+(\.\d+)+)`.
fn first_version(ua: &str, prefix_len: impl Fn(&str) -> Option<usize>) -> Option<String> {
    ua.char_indices().find_map(|(start, _)| {
        let rest = ua.get(start..)?;
        let after = rest.get(prefix_len(rest)?..)?;
        dotted_number(after).map(str::to_owned)
    })
}

/// The longest `\d+(\.\d+)+` at the start of `s` (greedy, as the regex takes it).
fn dotted_number(s: &str) -> Option<&str> {
    let bytes = s.as_bytes();
    let digits_from = |i: usize| bytes.iter().skip(i).take_while(|b| b.is_ascii_digit()).count();
    let mut end = digits_from(0);
    if end == 0 {
        return None;
    }
    let mut groups = 0;
    while bytes.get(end) == Some(&b'.') {
        let run = digits_from(end + 1);
        if run == 0 {
            break;
        }
        end += 1 + run;
        groups += 1;
    }
    if groups == 0 {
        return None;
    }
    s.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `(context.userAgent, $browser, $browser_version)` from the published
    /// conformance vectors (`""` is never sent there: the empty user agent is
    /// removed before the action runs).
    const CONFORMANCE: &[(&str, &str, Option<&str>)] = &[
        (" ", "", None),
        ("Analytics-Swift/1.4.8 (iOS 17.0)", "", None),
        ("Dalvik/2.1.0 (Linux; U; Android 9; SM-G960F Build/PPR1.180610.011)", ANDROID_MOBILE, None),
        ("Googlebot/2.1 (+http://www.google.com/bot.html)", "", None),
        (
            "Mozilla/5.0 (BlackBerry; U; BlackBerry 9900; en) AppleWebKit/534.11+ (KHTML, like Gecko) Version/7.1.0.346 Mobile Safari/534.11+",
            BLACKBERRY,
            None,
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-S908B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
            SAMSUNG_INTERNET,
            Some("23.0"),
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 10; en-US; RMX1851 Build/QKQ1.190918.001) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 UCBrowser/13.4.0.1306 Mobile Safari/537.36",
            UC_BROWSER,
            Some("13.4.0.1306"),
        ),
        ("Mozilla/5.0 (Linux; U; android 4.4.2; en-us) AppleWebKit/534.30 (KHTML, like Gecko)", MOZILLA, None),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
            CHROME,
            Some("119.0.0.0"),
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
            SAFARI,
            Some("17.1"),
        ),
        ("Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko", INTERNET_EXPLORER, Some("11.0")),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
            EDGE,
            Some("120.0.2210.91"),
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0",
            OPERA,
            Some("106.0.0.0"),
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.130 Safari/537.36",
            CHROME,
            Some("120.0.6099.130"),
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19041",
            EDGE,
            Some("18.19041"),
        ),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0", FIREFOX, Some("121.0")),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 SeaMonkey/2.53.17", MOZILLA, Some("109.0")),
        ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0", FIREFOX, Some("115.0")),
        ("Mozilla/5.0 (compatible; Konqueror/4.5; Linux) KHTML/4.5.5 (like Gecko)", KONQUEROR, None),
        ("Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; Trident/6.0)", INTERNET_EXPLORER, Some("10.0")),
        (
            "Mozilla/5.0 (compatible; MSIE 10.0; Windows Phone 8.0; Trident/6.0; IEMobile/10.0; ARM; Touch; NOKIA; Lumia 920)",
            IE_MOBILE,
            None,
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
            SAFARI,
            Some("16.6"),
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 16_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBDV/iPhone14,2;FBMD/iPhone;FBSN/iOS;FBSV/16.0]",
            FACEBOOK_MOBILE,
            None,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
            CHROME_IOS,
            Some("120.0.6099.119"),
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/121.0 Mobile/15E148 Safari/605.1.15",
            FIREFOX_IOS,
            Some("121.0"),
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 9_1 like Mac OS X) AppleWebKit/601.1.46 (KHTML, like Gecko) Version/9.0 Mobile/13B143 Safari/601.1",
            MOBILE_SAFARI,
            Some("9.0"),
        ),
        (
            "Opera/9.80 (J2ME/MIDP; Opera Mini/9.80 (S60; SymbOS; Opera Mobi/23.348; U; en) Presto/2.5.25 Version/10.54",
            "",
            None,
        ),
        ("curl/8.4.0", "", None),
        ("okhttp/4.9.3", "", None),
    ];

    /// More agents; expected values from the reference's functions run on Node.js.
    const MORE: &[(&str, &str, Option<&str>)] = &[
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            MOBILE_SAFARI,
            Some("17.1"),
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
            CHROME,
            Some("120.0.6099.144"),
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-S908B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0.1.1 Chrome/115.0.0.0 Mobile Safari/537.36",
            SAMSUNG_INTERNET,
            Some("23.0.1.1"),
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/52.0.2743.116 Safari/537.36 Edge/15.15063",
            EDGE,
            Some("15.15063"),
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 OPR/106.0.4998.52",
            OPERA,
            Some("106.0.4998.52"),
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 9; en-US; SM-A105F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/86.0.4240.198 Mobile Safari/537.36 OPR/61.2.2254.59937 Opera Mini",
            OPERA_MINI,
            None,
        ),
        ("Opera/9.80 (Windows NT 6.1; WOW64) Presto/2.12.388 Version/12.18", "", None),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0", FIREFOX, Some("121.0")),
        ("Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko", INTERNET_EXPLORER, Some("11.0")),
        ("Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)", INTERNET_EXPLORER, Some("10.0")),
        ("Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 5.1)", INTERNET_EXPLORER, Some("8.0")),
        (
            "Mozilla/5.0 (BB10; Touch) AppleWebKit/537.10+ (KHTML, like Gecko) Version/10.0.9.2372 Mobile Safari/537.10+",
            BLACKBERRY,
            None,
        ),
        ("BlackBerry9700/5.0.0.351 Profile/MIDP-2.1 Configuration/CLDC-1.1 VendorID/123", BLACKBERRY, None),
        (
            "Mozilla/5.0 (PlayBook; U; RIM Tablet OS 2.1.0; en-US) AppleWebKit/536.2+ (KHTML, like Gecko) Version/7.2.1.0 Safari/536.2+",
            BLACKBERRY,
            None,
        ),
        ("UCWEB/2.0 (MIDP-2.0; U; Adr 9.0.0) UCBrowser U2/1.0.0 Gecko/63.0 Firefox/63.0", UC_BROWSER, Some("2.0")),
        (
            "Mozilla/5.0 (Linux; Android 12; Pixel 6) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/445.0.0.34.118;]",
            CHROME,
            Some("120.0.6099.144"),
        ),
        (
            "Mozilla/5.0 (Mobile; Windows Phone 8.1; Android 4.0; ARM; Trident/7.0; Touch; rv:11.0; IEMobile/11.0; NOKIA; Lumia 635) like iPhone OS 7_0_3 Mac OS X AppleWebKit/537 (KHTML, like Gecko) Mobile Safari/537",
            IE_MOBILE,
            Some("11.0"),
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 4.0.3; ko-kr; LG-L160L Build/IML74K) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30",
            SAFARI,
            Some("4.0"),
        ),
        ("Mozilla/5.0 (Linux; U; Android 2.3; en-us) AppleWebKit/533.1 (KHTML, like Gecko)", ANDROID_MOBILE, None),
        ("Mozilla/5.0 (X11; Linux) KHTML/4.9.1 (like Gecko) Konqueror:4.9", KONQUEROR, Some("4.9")),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.28 Safari/537.36",
            CHROME,
            Some("120.0.6099.28"),
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17 Safari/605.1.15",
            SAFARI,
            None,
        ),
        ("Mozilla/5.0 (Windows NT 10.0) Chrome/106", CHROME, None),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "", None),
        ("", "", None),
        // Lower-case `android` then one JavaScript white-space character.
        ("Mozilla/5.0 (Linux; Android; android\u{a0}12.1; x)", ANDROID_MOBILE, Some("12.1")),
        ("Mozilla/5.0 (Linux; Android; android\u{2028}12.1; x)", ANDROID_MOBILE, Some("12.1")),
        ("Mozilla/5.0 (Linux; Android; android\u{85}12.1; x)", ANDROID_MOBILE, None),
        ("Android android 5 android 6.0.1", ANDROID_MOBILE, Some("6.0.1")),
        // BlackBerry ignores ASCII case only (a KELVIN SIGN is not a `k`).
        ("Mozilla/5.0 (bLaCkBeRrY 10.1.2)", BLACKBERRY, None),
        ("Mozilla/5.0 (Blac\u{212a}Berry 10.1.2) Gecko", MOZILLA, None),
        // `\d` is ASCII only; the first place where a dotted number follows wins.
        ("Chrome/\u{661}\u{662}.0 Chrome/1.2", CHROME, Some("1.2")),
    ];

    #[test]
    fn conformance_user_agents() {
        for &(ua, name, version) in CONFORMANCE.iter().chain(MORE) {
            assert_eq!(browser(ua), name, "browser({ua:?})");
            assert_eq!(browser_version(ua, browser(ua)).as_deref(), version, "version({ua:?})");
        }
    }

    #[test]
    fn version_needs_a_dot_and_is_greedy() {
        assert_eq!(dotted_number("120.0.6099.130 Safari"), Some("120.0.6099.130"));
        assert_eq!(dotted_number("18.19041)"), Some("18.19041"));
        assert_eq!(dotted_number("106"), None);
        assert_eq!(dotted_number("1."), None);
        assert_eq!(dotted_number("1.2."), Some("1.2"));
        assert_eq!(dotted_number(".5"), None);
        assert_eq!(dotted_number(""), None);
    }

    #[test]
    fn unknown_browser_names_have_no_version() {
        assert_eq!(browser_version("Chrome/1.2", "Netscape"), None);
        assert_eq!(browser_version("Chrome/1.2", FACEBOOK_MOBILE), None);
        assert_eq!(browser_version("Opera Mini/1.2", OPERA_MINI), None);
    }

    proptest! {
        #[test]
        fn never_panics(ua in any::<String>()) {
            let name = browser(&ua);
            if let Some(v) = browser_version(&ua, name) {
                prop_assert!(v.contains('.'));
                prop_assert!(ua.contains(v.as_str()));
            }
        }

        /// Jumping between prefix occurrences finds what trying every
        /// position finds.
        #[test]
        fn prefix_search_matches_the_scan(
            ua in "(Chrome/|Edg/|Edge/|OPR/|Opera/|rv:|MSIE |UCWEB/|Version/|[0-9]{1,3}|\\.|\u{a0}|é| ){0,14}"
        ) {
            let lists: [&[&str]; 5] = [&["rv:"], &["Edge/", "Edg/"], &["Opera/", "OPR/"], &["rv:", "MSIE "], &["UCBrowser/", "UCWEB/"]];
            for prefixes in lists {
                let scan = first_version(&ua, |rest| prefixes.iter().find(|p| rest.starts_with(**p)).map(|p| p.len()));
                prop_assert_eq!(first_version_after(&ua, prefixes), scan);
            }
        }

        #[test]
        fn never_panics_on_agent_like_text(
            ua in "(Chrome/|Edg/|OPR/ |Mini|android |Android|rv:|MSIE |Version/|Safari|iPhone|[0-9]{1,3}|\\.|\u{a0}|é){0,12}"
        ) {
            let name = browser(&ua);
            let _ = browser_version(&ua, name);
        }
    }
}
