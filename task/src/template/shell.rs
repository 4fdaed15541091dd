//! Shell quoting: where a placeholder stands in a command (found by lexing it as `sh` does), and a value
//! written so that it stays one piece of data there. See the module docs of `template` for the rules.

/// How a value is written where its placeholder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// In a command, outside quotes: one single-quoted word.
    Word,
    /// In a command, inside single quotes.
    InSingle,
    /// In a command, inside double quotes.
    InDouble,
    /// In an `env` value: as is.
    Literal,
}

/// `v` written for `quoting` (see the module docs).
pub fn quote(v: &str, quoting: Quoting) -> String {
    match quoting {
        Quoting::Literal => v.to_string(),
        Quoting::Word => format!("'{}'", v.replace('\'', r"'\''")),
        Quoting::InSingle => v.replace('\'', r"'\''"),
        Quoting::InDouble => {
            let mut s = String::with_capacity(v.len() + 2);
            for c in v.chars() {
                if matches!(c, '\\' | '"' | '$' | '`') {
                    s.push('\\');
                }
                s.push(c);
            }
            s
        }
    }
}

/// Constructs in whose presence a command takes no placeholder: inside them (or after them) the shell expands
/// or evaluates text in ways a quoted value does not survive, and following them is beyond a small lexer, so
/// a command holding any of them anywhere is refused rather than guessed at.
const UNSAFE_SYNTAX: &[(&str, &str)] = &[
    ("`", "in a command with backticks"),
    ("$(", "in a command with $(...)"),
    ("${", "in a command with ${...}"),
    ("$[", "in a command with $[...]"),
    ("$'", "in a command with $'...'"),
    ("$\"", "in a command with $\"...\""),
    ("((", "in a command with ((...))"),
    ("<<", "in a command with a here-document or here-string"),
    ("<(", "in a command with a process substitution"),
    (">(", "in a command with a process substitution"),
];

/// Words whose arguments the shell evaluates (as code or arithmetic): a value given to them would run.
const EVALUATING_WORDS: &[&str] = &["eval", "let", "[[", "declare", "typeset", "local", "readonly", "case"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Plain,
    Single,
    Double,
}

/// The quoting of each placeholder in shell command `s`; `Err((name, where))` for the first one that stands
/// where a value cannot be quoted safely.
///
/// Deliberately small: a command with a placeholder may use words, `'...'`, `"..."` with plain `$NAME`
/// expansions, backslashes, redirections, pipes, `;`, `&&`, `||`, `(...)` and `{ ...; }`, which this lexer
/// follows exactly in both `sh` (dash) and bash; anything else ([`UNSAFE_SYNTAX`], [`EVALUATING_WORDS`], a
/// comment) makes the command refuse placeholders.
pub(super) fn shell_contexts(
    s: &str,
    found: &[(usize, usize, String)],
) -> Result<Vec<Quoting>, (String, &'static str)> {
    let first = || found[0].2.clone();
    if let Some((_, why)) = UNSAFE_SYNTAX.iter().find(|(pat, _)| s.contains(pat)) {
        return Err((first(), why));
    }
    let is_word = |c: char| !(c.is_whitespace() || ";&|()<>".contains(c));
    if s.split(|c: char| !is_word(c)).any(|w| EVALUATING_WORDS.contains(&w)) {
        return Err((first(), "in a command using eval, let, [[, declare, typeset, local, readonly or case"));
    }
    let b = s.as_bytes();
    let mut state = Lex::Plain;
    let (mut i, mut h) = (0usize, 0usize);
    let mut out = Vec::with_capacity(found.len());
    while i < b.len() {
        if h < found.len() && i == found[h].0 {
            let q = match state {
                Lex::Plain => Quoting::Word,
                Lex::Single => Quoting::InSingle,
                Lex::Double => {
                    // `"$NAME{{v}}"` would extend the variable's name with the value.
                    let before = &b[..i];
                    let name_len = before.iter().rev().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
                    if before.len() > name_len && before[before.len() - name_len - 1] == b'$' {
                        return Err((found[h].2.clone(), "right after a $NAME inside double quotes"));
                    }
                    Quoting::InDouble
                }
            };
            out.push(q);
            i = found[h].1;
            h += 1;
            continue;
        }
        let c = b[i];
        let mut step = 1;
        match state {
            Lex::Single => {
                if c == b'\'' {
                    state = Lex::Plain;
                }
            }
            Lex::Double => match c {
                b'\\' => step = 2,
                b'"' => state = Lex::Plain,
                _ => {}
            },
            Lex::Plain => match c {
                b'\\' => step = 2,
                b'\'' => state = Lex::Single,
                b'"' => state = Lex::Double,
                b'#' if i == 0 || !is_word(b[i - 1] as char) => {
                    // A comment: it runs to the end of the line, where a value's newline would end it.
                    if h < found.len() {
                        return Err((found[h].2.clone(), "in a comment, or after one"));
                    }
                    break;
                }
                _ => {}
            },
        }
        i += step;
    }
    if out.len() < found.len() {
        // A placeholder inside an escape (`\{{x}}`) was skipped over: refuse it.
        return Err((found[out.len()].2.clone(), "right after a backslash"));
    }
    if state != Lex::Plain {
        return Err((first(), "in a command with an unterminated quote"));
    }
    Ok(out)
}
