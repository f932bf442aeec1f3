//! Durations on the command line: `90s`, `30m`, `1h`, `1h30m`, `7d`.

use std::time::Duration;

/// Parse `1h30m`-style durations (units d, h, m, s; at least one).
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration '{text}': use a number with a unit, e.g. 30m, 1h, 1h30m, 7d");
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
        any = true;
    }
    if !number.is_empty() || !any {
        return Err(bad());
    }
    if total == 0 {
        return Err(format!("invalid duration '{text}': must be above zero"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn units_combine_and_junk_is_refused() {
        assert_eq!(parse("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse("7d").unwrap().as_secs(), 604_800);
        assert_eq!(parse("45s").unwrap().as_secs(), 45);
        for bad in ["", "10", "h", "1x", "0m", "-1h", "1.5h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
