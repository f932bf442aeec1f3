//! A static worst-case cost for CEL conditions, computed when a policy compiles, so that no
//! condition an admin can write makes an evaluation run for minutes or fill memory.
//!
//! cel-rust has no step budget: a comprehension runs as many times as its range has items, and
//! nested comprehensions multiply (`l.all(a, l.all(b, …))` over 64 items, seven deep, is 10¹²
//! steps in ~400 bytes; `.map` of `.map` builds lists of lists until memory runs out). The API
//! server bounds its own CEL the same way: each variable has a declared maximum size (its
//! schema's `maxItems` / `maxLength`), and a static estimate of the worst-case cost of an
//! expression over inputs of those sizes must stay under a limit
//! (k8s.io/apiserver/pkg/cel, `StaticEstimatedCostLimit`).
//!
//! Here the declared sizes are [`CelBounds`]; a request outside them is never evaluated (its
//! conditions fail closed, [`within_bounds`]). Costs are in units of roughly one interpreter
//! step: every node evaluated costs 1, every value a function reads or builds costs its
//! [`Shape::flat`] size (1 per item, a tenth per byte, as Kubernetes charges string traversal),
//! a comprehension costs its range's maximum length times its body. A regular expression must be
//! a literal, is compiled once here under a size limit, and costs [`REGEX_CALL_COST`] per call
//! (cel-rust compiles it at every call).

use crate::facts::CsrFacts;
use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue};
use std::collections::BTreeMap;

/// The expressions docs/policy.md documents as meaning the same in kcert and in the API server
/// (tests/e2e/cel.rs asks the API server's own CEL).
pub const DOCUMENTED_CONDITIONS: [&str; 13] = [
    "size(request.groups) <= 3",
    "request.groups.all(g, g.startsWith('team-'))",
    "request.groups.exists(g, g == 'ops')",
    "request.groups.all(g, g in requester.groups)",
    "request.commonName == requester.user",
    "request.commonName.matches('^[a-z][a-z0-9-]*$')",
    "request.usages.all(u, u in ['digital signature', 'key encipherment', 'client auth'])",
    "request.key.type == 'rsa' ? request.key.bits >= 3072 : true",
    "request.lifetimeSeconds == 0 || request.lifetimeSeconds <= 86400",
    "signerName.endsWith('/client')",
    "has(requester.serviceAccount) && requester.serviceAccount.namespace == 'ci'",
    "'team' in requester.extra && requester.extra['team'].exists(t, 'team-' + t in request.groups)",
    "size(request.commonName) <= 20 && !request.commonName.contains('admin')",
];

/// Most cost one condition may have in the worst case (the API server's per-call limit for its
/// own CEL is 1,000,000 of its units, which are close to these).
pub const MAX_CONDITION_COST: u64 = 1_000_000;
/// Most cost all conditions of one policy (one ApprovalPolicy object) may have together, so
/// that 256 rules of 16 conditions cannot add up to minutes either.
pub const MAX_POLICY_CONDITION_COST: u64 = 10_000_000;
/// Largest compiled size (NFA) of a `matches()` pattern. cel-rust compiles the pattern at every
/// call, and compiling takes time in proportion to what it builds: about 1 ms for 256 KiB.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Cost of one `matches()` call before matching: compiling the pattern, which is charged
/// [`REGEX_COST_PER_BYTE`] for each byte the compiled pattern holds on top of this (measured:
/// about 10 µs for a small pattern, 3–4 ns per byte of compiled size, at ~2 ns per unit).
pub const REGEX_CALL_COST: u64 = 5_000;
/// Cost per byte of a compiled `matches()` pattern, at every call.
pub const REGEX_COST_PER_BYTE: u64 = 2;
/// Most distinct `matches()` patterns in one policy (each is compiled once when the policy
/// compiles, to be priced).
pub const MAX_PATTERNS: usize = 64;

/// What building the variables of an evaluation costs, charged once per rule with conditions
/// in the policy's total (measured: ~0.3 ms at the largest inputs; it is done once per
/// evaluation, but a rule may be the only one a request reaches).
pub const CONTEXT_COST: u64 = 40_000;

/// The patterns of one policy, compiled once each to be priced.
#[derive(Default)]
pub struct Patterns {
    compiled: BTreeMap<String, u64>,
}

/// The largest inputs conditions are evaluated over: the declared sizes of the variables.
/// A request or requester beyond them is not evaluated (fail closed: `ConditionNotMet`).
pub struct CelBounds;

impl CelBounds {
    /// Longest string (CN, group, UID, usage, SAN, user, extra key or value), in bytes.
    pub const STRING_BYTES: u64 = 256;
    /// Longest signer name, in bytes (a qualified name: 253-byte domain, `/`, a path).
    pub const SIGNER_NAME_BYTES: u64 = 571;
    /// Most items in a list (groups, usages, each kind of SAN, each extra value list).
    pub const LIST_ITEMS: u64 = 64;
    /// Most keys in `requester.extra`.
    pub const EXTRA_KEYS: u64 = 16;
}

/// Why `facts` are outside [`CelBounds`] (`None`: within them).
pub fn within_bounds(facts: &CsrFacts) -> Option<String> {
    let s = CelBounds::STRING_BYTES as usize;
    let n = CelBounds::LIST_ITEMS as usize;
    let strings = |what: &str, items: &[String]| -> Option<String> {
        if items.len() > n {
            return Some(format!("{what} has {} items (at most {n})", items.len()));
        }
        items
            .iter()
            .find(|i| i.len() > s)
            .map(|i| format!("{what} has an item of {} bytes (at most {s})", i.len()))
    };
    let one = |what: &str, value: &str| -> Option<String> {
        (value.len() > s).then(|| format!("{what} is {} bytes (at most {s})", value.len()))
    };
    let r = &facts.requester;
    if facts.signer_name.len() > CelBounds::SIGNER_NAME_BYTES as usize {
        return Some(format!(
            "signerName is {} bytes (at most {})",
            facts.signer_name.len(),
            CelBounds::SIGNER_NAME_BYTES
        ));
    }
    if r.extra.len() > CelBounds::EXTRA_KEYS as usize {
        return Some(format!(
            "requester.extra has {} keys (at most {})",
            r.extra.len(),
            CelBounds::EXTRA_KEYS
        ));
    }
    one(
        "request.commonName",
        facts.common_name().unwrap_or_default(),
    )
    .or_else(|| one("request.uid", facts.uids.first().map_or("", |u| u)))
    .or_else(|| strings("request.groups", &facts.organizations))
    .or_else(|| strings("request.usages", &facts.usages))
    .or_else(|| strings("request.sans.dns", &facts.sans.dns))
    .or_else(|| strings("request.sans.ips", &facts.sans.ips))
    .or_else(|| strings("request.sans.emails", &facts.sans.emails))
    .or_else(|| strings("request.sans.uris", &facts.sans.uris))
    .or_else(|| one("requester.user", &r.username))
    .or_else(|| one("requester.uid", &r.uid))
    .or_else(|| strings("requester.groups", &r.groups))
    .or_else(|| {
        r.extra.iter().find_map(|(k, v)| {
            one("a requester.extra key", k).or_else(|| strings("a requester.extra value", v))
        })
    })
}

/// The largest value an expression can produce: a scalar of `len` bytes, a list of `len`
/// items like `elem`, a map of `len` entries whose keys and values are like `elem`, or an object
/// with known `fields`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shape {
    len: u64,
    elem: Option<Box<Shape>>,
    fields: Option<BTreeMap<String, Shape>>,
}

impl Shape {
    fn scalar(bytes: u64) -> Shape {
        Shape {
            len: bytes,
            ..Shape::default()
        }
    }
    fn string() -> Shape {
        Shape::scalar(CelBounds::STRING_BYTES)
    }
    fn list(len: u64, elem: Shape) -> Shape {
        Shape {
            len,
            elem: Some(Box::new(elem)),
            fields: None,
        }
    }
    fn object(fields: &[(&str, Shape)]) -> Shape {
        let map: BTreeMap<String, Shape> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let elem = map.values().fold(Shape::string(), |acc, v| merge(&acc, v));
        Shape {
            len: map.len() as u64,
            elem: Some(Box::new(elem)),
            fields: Some(map),
        }
    }

    /// What reading or copying the whole value costs: 1 per item, a tenth per byte.
    pub fn flat(&self) -> u64 {
        match &self.elem {
            None => 1 + self.len.div_ceil(10),
            Some(e) => 1u64.saturating_add(self.len.saturating_mul(e.flat())),
        }
    }

    /// An item of a list, a key or value of a map, a field of an object (any of them).
    fn member(&self) -> Shape {
        match &self.elem {
            Some(e) => (**e).clone(),
            // Indexing a scalar fails at run time; what a string "holds" is at most itself.
            None => self.clone(),
        }
    }

    fn field(&self, name: &str) -> Shape {
        match &self.fields {
            Some(f) => f.get(name).cloned().unwrap_or_default(),
            None => self.member(),
        }
    }
}

/// The larger of two shapes, field by field.
fn merge(a: &Shape, b: &Shape) -> Shape {
    let elem = match (&a.elem, &b.elem) {
        (Some(x), Some(y)) => Some(Box::new(merge(x, y))),
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (None, None) => None,
    };
    Shape {
        len: a.len.max(b.len),
        elem,
        // Different objects merged: a field is looked up as any member.
        fields: if a.fields == b.fields {
            a.fields.clone()
        } else {
            None
        },
    }
}

/// `a + b` (strings and lists concatenate).
fn concat(a: &Shape, b: &Shape) -> Shape {
    let mut s = merge(a, b);
    s.len = a.len.saturating_add(b.len);
    s.fields = None;
    s
}

/// The variables conditions see (`cel_variables`), at their largest.
fn declared() -> BTreeMap<&'static str, Shape> {
    let string = Shape::string;
    let strings = || Shape::list(CelBounds::LIST_ITEMS, string());
    let request = Shape::object(&[
        ("commonName", string()),
        ("groups", strings()),
        ("uid", string()),
        ("usages", strings()),
        (
            "sans",
            Shape::object(&[
                ("dns", strings()),
                ("ips", strings()),
                ("emails", strings()),
                ("uris", strings()),
            ]),
        ),
        (
            "key",
            Shape::object(&[("type", Shape::scalar(16)), ("bits", Shape::scalar(8))]),
        ),
        ("lifetimeSeconds", Shape::scalar(8)),
    ]);
    let mut extra = Shape::list(CelBounds::EXTRA_KEYS, strings());
    extra.elem = Some(Box::new(strings()));
    let requester = Shape::object(&[
        ("user", string()),
        ("uid", string()),
        ("groups", strings()),
        ("extra", extra),
        (
            "serviceAccount",
            Shape::object(&[("namespace", string()), ("name", string())]),
        ),
    ]);
    BTreeMap::from([
        ("request", request),
        ("requester", requester),
        ("signerName", Shape::scalar(CelBounds::SIGNER_NAME_BYTES)),
    ])
}

/// The worst-case cost of `program` over inputs within [`CelBounds`], or why it has none
/// kcert can bound (a function it does not know, a pattern that is not a literal).
pub fn estimate(program: &cel::Program) -> Result<u64, String> {
    estimate_in(program, &mut Patterns::default())
}

/// [`estimate`], with the patterns of the policy compiled so far.
pub fn estimate_in(program: &cel::Program, patterns: &mut Patterns) -> Result<u64, String> {
    let mut e = Estimator {
        vars: declared(),
        scopes: Vec::new(),
        patterns,
    };
    e.expr(program.expression()).map(|(cost, _)| cost)
}

struct Estimator<'p> {
    vars: BTreeMap<&'static str, Shape>,
    scopes: Vec<(String, Shape)>,
    patterns: &'p mut Patterns,
}

/// Functions whose result is one of their arguments (or an optional of one).
const PASS_THROUGH: &[&str] = &[
    "dyn",
    "optional.of",
    "optional.ofNonZeroValue",
    "value",
    "orValue",
    "or",
    "_?_:_",
];

/// Functions whose result is a scalar (a bool, a number, a time, a type): they cost a read of
/// their arguments.
const SCALAR_RESULT: &[&str] = &[
    "_&&_",
    "_||_",
    "!_",
    "-_",
    "_-_",
    "_*_",
    "_/_",
    "_%_",
    "_==_",
    "_!=_",
    "_>=_",
    "_<=_",
    "_>_",
    "_<_",
    "@in",
    "@not_strictly_false",
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "bool",
    "duration",
    "timestamp",
    "type",
    "hasValue",
    "optional.none",
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
];

type Estimate = Result<(u64, Shape), String>;

impl Estimator<'_> {
    fn lookup(&self, name: &str) -> Shape {
        if let Some((_, s)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
            return s.clone();
        }
        // An unknown name fails at run time (no cost); type names (`int`, …) are scalars.
        self.vars
            .get(name)
            .cloned()
            .unwrap_or_else(|| Shape::scalar(16))
    }

    fn expr(&mut self, e: &IdedExpr) -> Estimate {
        match &e.expr {
            Expr::Unspecified => Ok((1, Shape::scalar(1))),
            Expr::Literal(l) => Ok((1, literal(l))),
            Expr::Ident(name) => Ok((1, self.lookup(name))),
            Expr::Select(s) => {
                let (cost, operand) = self.expr(&s.operand)?;
                let shape = if s.test {
                    Shape::scalar(1)
                } else {
                    operand.field(&s.field)
                };
                Ok((cost.saturating_add(1), shape))
            }
            Expr::List(l) => {
                let mut cost = 1 + l.elements.len() as u64;
                let mut elem = Shape::scalar(0);
                for x in &l.elements {
                    let (c, s) = self.expr(x)?;
                    cost = cost.saturating_add(c);
                    elem = merge(&elem, &s);
                }
                Ok((cost, Shape::list(l.elements.len() as u64, elem)))
            }
            Expr::Map(m) => self.entries(&m.entries),
            Expr::Struct(s) => self.entries(&s.entries),
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Call(call) => {
                let mut args = Vec::new();
                let mut cost: u64 = 1;
                for a in call.target.iter().map(|t| &**t).chain(call.args.iter()) {
                    let (c, s) = self.expr(a)?;
                    cost = cost.saturating_add(c);
                    args.push(s);
                }
                // Every function may read (compare, copy, convert) all of its arguments.
                let reads = args
                    .iter()
                    .fold(0u64, |acc, s| acc.saturating_add(s.flat()));
                cost = cost.saturating_add(reads);
                let name = call.func_name.as_str();
                let shape = match name {
                    "_+_" => args.iter().fold(Shape::scalar(0), |acc, s| concat(&acc, s)),
                    "_[_]" | "_[?_]" => args.first().map(Shape::member).unwrap_or_default(),
                    "_?._" => match (args.first(), call.args.get(1).map(|a| &a.expr)) {
                        (Some(o), Some(Expr::Literal(LiteralValue::String(f)))) => {
                            o.field(f.inner())
                        }
                        (Some(o), _) => o.member(),
                        _ => Shape::default(),
                    },
                    "string" | "bytes" => Shape::scalar(
                        args.iter()
                            .fold(64, |acc: u64, s| acc.max(s.flat().saturating_mul(10))),
                    ),
                    _ if PASS_THROUGH.contains(&name) => {
                        let from = if name == "_?_:_" { 1 } else { 0 };
                        args.iter()
                            .skip(from)
                            .fold(Shape::scalar(1), |acc, s| merge(&acc, s))
                    }
                    _ if SCALAR_RESULT.contains(&name) => Shape::scalar(64),
                    _ => {
                        return Err(format!(
                            "it calls {name}(), which kcert cannot bound the cost of; use the standard functions and macros"
                        ));
                    }
                };
                if name == "matches" {
                    let subject = args.first().map_or(0, Shape::flat);
                    let (pattern, compiled) = literal_pattern(call, self.patterns)?;
                    cost = cost
                        .saturating_add(REGEX_CALL_COST)
                        .saturating_add(compiled.saturating_mul(REGEX_COST_PER_BYTE))
                        .saturating_add(subject.saturating_mul(pattern as u64 + 1));
                }
                Ok((cost, shape))
            }
        }
    }

    fn entries(&mut self, entries: &[cel::common::ast::IdedEntryExpr]) -> Estimate {
        let mut cost = 1 + entries.len() as u64;
        let mut elem = Shape::scalar(0);
        for entry in entries {
            let parts: Vec<&IdedExpr> = match &entry.expr {
                EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
                EntryExpr::StructField(f) => vec![&f.value],
            };
            for p in parts {
                let (c, s) = self.expr(p)?;
                cost = cost.saturating_add(c);
                elem = merge(&elem, &s);
            }
        }
        Ok((cost, Shape::list(entries.len() as u64, elem)))
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) -> Estimate {
        let (range_cost, range) = self.expr(&c.iter_range)?;
        let n = range.len;
        let item = range.member();
        let (init_cost, init) = self.expr(&c.accu_init)?;
        let depth = self.scopes.len();
        self.scopes.push((c.iter_var.clone(), item.clone()));
        if let Some(v2) = &c.iter_var2 {
            self.scopes.push((v2.clone(), item.clone()));
        }
        // One pass over the step, with the accumulator as it starts, gives both how much it
        // grows per item (`map` and `filter` append one) and the step's cost; each read of the
        // accumulator then costs at most its final size more. One pass, not two: a second
        // would make the estimate itself exponential in the nesting depth.
        self.scopes.push((c.accu_var.clone(), init.clone()));
        let first = self
            .expr(&c.loop_step)
            .and_then(|step| self.expr(&c.loop_cond).map(|cond| (step, cond)));
        let ((step_cost, stepped), (cond_cost, _)) = match first {
            Ok(x) => x,
            Err(e) => {
                self.scopes.truncate(depth);
                return Err(e);
            }
        };
        let mut accu = merge(&init, &stepped);
        if stepped.elem.is_some() {
            // A list accumulator grows by what one step added, at every item.
            let growth = stepped.len.saturating_sub(init.len);
            accu.len = init.len.saturating_add(n.saturating_mul(growth));
        }
        let reads = free_reads(&c.loop_step, &c.accu_var) + free_reads(&c.loop_cond, &c.accu_var);
        let larger = accu.flat().saturating_sub(init.flat());
        let body = step_cost
            .saturating_add(cond_cost)
            .saturating_add(reads.saturating_mul(larger));
        if let Some(last) = self.scopes.last_mut() {
            last.1 = accu.clone();
        }
        let result = self.expr(&c.result);
        self.scopes.truncate(depth);
        let (result_cost, result) = result?;
        let cost = range_cost
            .saturating_add(init_cost)
            .saturating_add(n.saturating_mul(body.saturating_add(1)))
            .saturating_add(result_cost);
        Ok((cost, result))
    }
}

/// How many times `e` reads the variable `name` where it is not rebound (a nested
/// comprehension with the same accumulator name shadows it in its step, condition and result).
fn free_reads(e: &IdedExpr, name: &str) -> u64 {
    match &e.expr {
        Expr::Ident(n) => u64::from(n == name),
        Expr::Select(s) => free_reads(&s.operand, name),
        Expr::Call(c) => c
            .target
            .iter()
            .map(|t| free_reads(t, name))
            .chain(c.args.iter().map(|a| free_reads(a, name)))
            .sum(),
        Expr::List(l) => l.elements.iter().map(|x| free_reads(x, name)).sum(),
        Expr::Map(m) => entry_reads(&m.entries, name),
        Expr::Struct(s) => entry_reads(&s.entries, name),
        Expr::Comprehension(c) => {
            let outside = free_reads(&c.iter_range, name) + free_reads(&c.accu_init, name);
            let shadowed =
                c.accu_var == name || c.iter_var == name || c.iter_var2.as_deref() == Some(name);
            if shadowed {
                outside
            } else {
                outside
                    + free_reads(&c.loop_step, name)
                    + free_reads(&c.loop_cond, name)
                    + free_reads(&c.result, name)
            }
        }
        Expr::Literal(_) | Expr::Unspecified => 0,
    }
}

fn entry_reads(entries: &[cel::common::ast::IdedEntryExpr], name: &str) -> u64 {
    entries
        .iter()
        .map(|e| match &e.expr {
            EntryExpr::MapEntry(m) => free_reads(&m.key, name) + free_reads(&m.value, name),
            EntryExpr::StructField(f) => free_reads(&f.value, name),
        })
        .sum()
}

fn literal(l: &LiteralValue) -> Shape {
    match l {
        LiteralValue::String(s) => Shape::scalar(s.inner().len() as u64),
        LiteralValue::Bytes(b) => Shape::scalar(b.inner().len() as u64),
        _ => Shape::scalar(8),
    }
}

/// The pattern of a `matches()` call, which must be a string literal that compiles within
/// [`REGEX_SIZE_LIMIT`]: its length and its compiled size in bytes.
fn literal_pattern(
    call: &cel::common::ast::CallExpr,
    patterns: &mut Patterns,
) -> Result<(usize, u64), String> {
    let pattern = if call.target.is_some() {
        call.args.first()
    } else {
        call.args.get(1)
    };
    let Some(IdedExpr {
        expr: Expr::Literal(LiteralValue::String(p)),
        ..
    }) = pattern
    else {
        return Err(
            "matches() takes a string literal as its pattern in kcert conditions (a pattern built from the request could be made costly to compile)".into(),
        );
    };
    let p = p.inner();
    if let Some(size) = patterns.compiled.get(p) {
        return Ok((p.len(), *size));
    }
    if patterns.compiled.len() >= MAX_PATTERNS {
        return Err(format!(
            "the policy has more than {MAX_PATTERNS} distinct matches() patterns"
        ));
    }
    let compiled = regex_automata::meta::Regex::builder()
        .configure(regex_automata::meta::Config::new().nfa_size_limit(Some(REGEX_SIZE_LIMIT)))
        .build(p)
        .map_err(|e| {
            format!("its pattern {p:?} does not compile within {REGEX_SIZE_LIMIT} bytes: {e}")
        })?;
    // What cel-rust compiles at each call is the same pattern through the regex crate.
    regex::Regex::new(p).map_err(|e| format!("its pattern {p:?} does not compile: {e}"))?;
    let size = compiled.memory_usage() as u64;
    patterns.compiled.insert(p.to_string(), size);
    Ok((p.len(), size))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decision::{cel_variables, evaluate_cel};
    use crate::facts::{CsrFacts, Requester};
    use proptest::prelude::*;

    fn cost(source: &str) -> Result<u64, String> {
        estimate(&cel::Program::compile(source).unwrap())
    }

    /// `l.all(a, l.all(b, … true))`, `depth` deep: 64^depth steps.
    pub(crate) fn nested_all(depth: usize) -> String {
        let vars = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let mut s = "true".to_string();
        for v in vars.iter().take(depth) {
            s = format!("request.groups.all({v}, {s})");
        }
        s
    }

    #[test]
    fn documented_expressions_are_well_within_the_budget() {
        for e in DOCUMENTED_CONDITIONS {
            let c = cost(e).unwrap_or_else(|why| panic!("{e:?}: {why}"));
            assert!(c < MAX_CONDITION_COST / 4, "{e:?} costs {c}");
        }
    }

    #[test]
    fn a_comprehension_costs_its_range_times_its_body() {
        let one = cost("request.groups.all(g, g == 'x')").unwrap();
        let two = cost("request.groups.all(g, request.groups.all(h, g == h))").unwrap();
        assert!(one >= CelBounds::LIST_ITEMS, "{one}");
        assert!(two >= CelBounds::LIST_ITEMS * one / 2, "{one} then {two}");
        assert!(cost(&nested_all(2)).unwrap() < MAX_CONDITION_COST);
        assert!(cost(&nested_all(4)).unwrap() > MAX_CONDITION_COST);
        // Seven deep is 64^7 = 4.4e12 steps.
        assert!(cost(&nested_all(7)).unwrap() > 4_000_000_000_000);
    }

    #[test]
    fn the_estimate_is_linear_in_the_nesting_depth() {
        // 40 comprehensions deep over one item: cheap to run, and cheap to estimate (a
        // two-pass estimate would take 2^40 steps here).
        let mut e = "true".to_string();
        for i in 0..40 {
            e = format!("[1].all(v{i}, {e})");
        }
        assert!(e.len() < MAX_CONDITION_BYTES_FOR_TESTS);
        assert!(cost(&e).unwrap() < 10_000);
    }

    const MAX_CONDITION_BYTES_FOR_TESTS: usize = crate::policy::MAX_CONDITION_BYTES;

    #[test]
    fn lists_built_by_map_are_charged_for_their_size() {
        // 64^4 strings of 1 KiB: 17 GB.
        let bomb = "request.groups.map(a, request.groups.map(b, request.groups.map(c, request.groups.map(d, a + b + c + d)))).size() > 0";
        assert!(cost(bomb).unwrap() > MAX_CONDITION_COST);
        // Doubling by concatenation is charged for what it copies.
        let grown = "[request.groups + request.groups + request.groups].map(x, x + x).size() > 0";
        let plain = cost("[request.groups].map(x, x).size() > 0").unwrap();
        assert!(cost(grown).unwrap() > 4 * plain);
    }

    #[test]
    fn what_cannot_be_bounded_is_refused() {
        let why = cost("request.commonName.matches(request.groups[0])").unwrap_err();
        assert!(why.contains("string literal"), "{why}");
        let why = cost("request.commonName.matches('(a{1000}){1000}')").unwrap_err();
        assert!(why.contains("does not compile within"), "{why}");
        let why = cost("request.commonName.lowerAscii() == 'x'").unwrap_err();
        assert!(why.contains("lowerAscii"), "{why}");
        assert!(cost("request.commonName.matches('^[a-z]+$')").is_ok());
        // Found by review: patterns that take milliseconds to compile, at every call, were
        // priced like small ones. Now priced by their compiled size, or refused outright.
        for slow in [
            "request.groups.exists(g, g.matches('(.*a){240}'))",
            "request.groups.exists(g, g.matches('(?s:.){200}'))",
            "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19].exists(i, ''.matches('\\\\w{4}'))",
        ] {
            assert!(
                cost(slow).is_err_and(|e| e.contains("does not compile within"))
                    || cost(slow).is_ok_and(|c| c > MAX_CONDITION_COST),
                "{slow}: {:?}",
                cost(slow)
            );
        }
        // An ordinary pattern over every group stays well within.
        let c = cost("request.groups.all(g, g.matches('^team-[a-z]+$'))").unwrap();
        assert!(c < MAX_CONDITION_COST, "{c}");
    }

    fn facts_with(groups: usize, bytes: usize) -> CsrFacts {
        CsrFacts {
            common_names: vec!["jane".into()],
            organizations: (0..groups).map(|i| format!("{i:0>bytes$}")).collect(),
            requester: Requester {
                username: "jane".into(),
                groups: (0..groups).map(|i| format!("{i:0>bytes$}")).collect(),
                ..Default::default()
            },
            signer_name: "kcert.dev/client".into(),
            ..Default::default()
        }
    }

    #[test]
    fn requests_beyond_the_bounds_are_named() {
        assert_eq!(within_bounds(&facts_with(64, 256)), None);
        let why = within_bounds(&facts_with(65, 8)).unwrap();
        assert!(why.contains("request.groups has 65 items"), "{why}");
        let why = within_bounds(&facts_with(3, 257)).unwrap();
        assert!(why.contains("257 bytes"), "{why}");
        let mut f = facts_with(1, 1);
        for i in 0..17 {
            f.requester.extra.insert(format!("k{i}"), vec![]);
        }
        assert!(
            within_bounds(&f)
                .unwrap()
                .contains("requester.extra has 17 keys")
        );
    }

    /// The list-building part of the language over the declared variables.
    fn list_expr() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("request.groups".to_string()),
            Just("requester.groups".to_string()),
            Just("request.usages".to_string()),
            Just("['x', 'yy']".to_string()),
        ];
        leaf.prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
                inner.clone().prop_map(|a| format!("{a}.map(x, x + x)")),
                inner
                    .clone()
                    .prop_map(|a| format!("{a}.filter(x, size(x) > 1)")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}.map(x, {b})")),
                (inner.clone(), inner).prop_map(|(a, b)| format!("(size({a}) > 2 ? {b} : {b})")),
            ]
        })
    }

    fn flat_of(v: &cel::Value) -> u64 {
        match v {
            cel::Value::List(items) => 1 + items.iter().map(flat_of).sum::<u64>(),
            cel::Value::String(s) => 1 + (s.len() as u64).div_ceil(10),
            _ => 1,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Over the largest inputs, what an expression builds is never larger than its shape
        /// says, and its cost covers at least building it.
        #[test]
        fn shapes_bound_what_evaluation_builds(e in list_expr()) {
            let program = cel::Program::compile(&e).unwrap();
            let mut patterns = Patterns::default();
            let mut est = Estimator { vars: declared(), scopes: Vec::new(), patterns: &mut patterns };
            let (cost, shape) = est.expr(program.expression()).unwrap();
            prop_assume!(cost < 20_000_000);
            let mut f = facts_with(64, 256);
            f.usages = (0..64).map(|i| format!("{i:0>256}")).collect();
            let vars = cel_variables(&f);
            let mut context = cel::Context::default();
            for name in ["request", "requester", "signerName"] {
                context.add_variable(name, vars[name].clone()).unwrap();
            }
            let value = program.execute(&context).unwrap();
            let built = flat_of(&value);
            prop_assert!(built <= shape.flat(), "{e}: built {built}, shape {}", shape.flat());
            // A variable is referenced, not copied: what the cost covers is what was built
            // beyond the largest variable.
            let largest = declared().values().flat_map(|v| v.fields.clone().unwrap_or_default().into_values()).map(|s| s.flat()).max().unwrap_or(0);
            prop_assert!(built <= cost + largest, "{e}: built {built}, cost {cost}");
            let _ = evaluate_cel;
        }
    }
}
