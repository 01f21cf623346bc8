//! The built-in functions' definitions as PostgreSQL prints them: `pg_get_functiondef`
//! (psql's `\sf`), `pg_get_function_arguments`, `pg_get_function_identity_arguments` and
//! `pg_get_function_result` (psql's `\df`, pgcli's function list), from `pg_proc`'s rows,
//! read once when the server starts.

use super::functions::{regtype_name, shaped_like};
use super::*;

/// A built-in function as `pg_proc` has it.
#[derive(Debug, Clone, Default)]
pub struct Routine {
    name: String,
    /// `f` function, `a` aggregate, `w` window function, `p` procedure.
    kind: String,
    language: i64,
    cost: f64,
    rows: f64,
    support: String,
    security_definer: bool,
    leakproof: bool,
    strict: bool,
    returns_set: bool,
    volatility: String,
    parallel: String,
    result: i32,
    /// The input arguments' types (`proargtypes`).
    inputs: Vec<i32>,
    /// Every argument's type, mode and name, when some are not inputs or have names.
    all: Vec<i32>,
    modes: Vec<String>,
    names: Vec<String>,
    /// The last input arguments' defaults (`proargdefaults`, deparsed).
    defaults: Vec<Option<Constant>>,
    source: String,
    binary: String,
}

/// `pg_proc`'s columns that [`Routine`] is read from, in order.
pub(super) const ROUTINE_COLUMNS: &str = "CAST(oid AS BIGINT), proname, prokind, \
    CAST(prolang AS BIGINT), CAST(procost AS DOUBLE), CAST(prorows AS DOUBLE), prosupport, \
    prosecdef, proleakproof, proisstrict, proretset, provolatile, proparallel, \
    CAST(prorettype AS BIGINT), proargtypes, proallargtypes, proargmodes, proargnames, \
    prosrc, probin, proargdefaults";

/// Every built-in function by OID, from batches of [`ROUTINE_COLUMNS`].
pub(super) fn routines(batches: &[RecordBatch]) -> Result<HashMap<i32, Routine>> {
    let mut out = HashMap::new();
    for batch in batches {
        let text = |i: usize| -> Result<StringArray> {
            let column = cast(batch.column(i), &DataType::Utf8)
                .map_err(|e| Error::Internal(format!("reading pg_proc: {e}")))?;
            Ok(column.as_string::<i32>().clone())
        };
        let number = |i: usize| -> Result<Vec<f64>> {
            let column = cast(batch.column(i), &DataType::Float64)
                .map_err(|e| Error::Internal(format!("reading pg_proc: {e}")))?;
            Ok(column
                .as_primitive::<arrow::datatypes::Float64Type>()
                .iter()
                .map(|v| v.unwrap_or(0.0))
                .collect())
        };
        let flag = |i: usize| -> Vec<bool> {
            batch
                .column(i)
                .as_boolean_opt()
                .map(|b| b.iter().map(|v| v.unwrap_or(false)).collect())
                .unwrap_or_else(|| vec![false; batch.num_rows()])
        };
        let (oids, names, kinds, languages) = (number(0)?, text(1)?, text(2)?, number(3)?);
        let (costs, rows, supports) = (number(4)?, number(5)?, text(6)?);
        let (definers, leakproofs, stricts, sets) = (flag(7), flag(8), flag(9), flag(10));
        let (volatilities, parallels, results) = (text(11)?, text(12)?, number(13)?);
        let (inputs, all, modes, arg_names) = (text(14)?, text(15)?, text(16)?, text(17)?);
        let (sources, binaries, defaults) = (text(18)?, text(19)?, text(20)?);
        let value = |column: &StringArray, row: usize| {
            if column.is_valid(row) {
                column.value(row).to_string()
            } else {
                String::new()
            }
        };
        for row in 0..batch.num_rows() {
            let routine = Routine {
                name: value(&names, row),
                kind: value(&kinds, row),
                language: languages[row] as i64,
                cost: costs[row],
                rows: rows[row],
                support: value(&supports, row),
                security_definer: definers[row],
                leakproof: leakproofs[row],
                strict: stricts[row],
                returns_set: sets[row],
                volatility: value(&volatilities, row),
                parallel: value(&parallels, row),
                result: results[row] as i32,
                inputs: oid_list(&value(&inputs, row)),
                all: oid_list(&value(&all, row)),
                modes: text_list(&value(&modes, row)),
                names: text_list(&value(&arg_names, row)),
                defaults: argument_defaults(&value(&defaults, row)),
                source: value(&sources, row),
                binary: value(&binaries, row),
            };
            out.insert(oids[row] as i32, routine);
        }
    }
    Ok(out)
}

/// OIDs written as an `oidvector` (`17 19`) or a list (`[23, 26]`).
fn oid_list(text: &str) -> Vec<i32> {
    let items = listed_items(Some(text))
        .unwrap_or_else(|| text.split_whitespace().map(str::to_string).collect());
    items.iter().filter_map(|n| n.parse().ok()).collect()
}

/// Words written as a list (`['i', 'o']`), each in its place.
fn text_list(text: &str) -> Vec<String> {
    listed_items(Some(text)).unwrap_or_default()
}

/// The expressions of a `pg_node_tree` list of argument defaults (`({CONST …} …)`), as
/// PostgreSQL deparses them: `0`, `true`, `'NFC'::text`, `'{}'::jsonb`. The built-in
/// functions' defaults are all constants of the types [`constant`] reads, some under an
/// implicit cast (the tests check that every one is read); a node that is not read is
/// `None`, and its argument shows no `DEFAULT`.
fn argument_defaults(tree: &str) -> Vec<Option<Constant>> {
    nodes(tree).into_iter().map(expression).collect()
}

/// The top-level nodes of a `pg_node_tree` list, each without its braces.
fn nodes(list: &str) -> Vec<&str> {
    let mut nodes = vec![];
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in list.char_indices() {
        match c {
            '{' if depth == 0 => (depth, start) = (1, i),
            '{' => depth += 1,
            '}' if depth == 1 => {
                depth = 0;
                nodes.push(&list[start + 1..i]);
            }
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    nodes
}

/// A node as SQL: a constant, or an implicit cast of one, which PostgreSQL writes as the
/// constant alone.
fn expression(node: &str) -> Option<Constant> {
    if let Some(constant_node) = node.strip_prefix("CONST") {
        return constant(constant_node);
    }
    let call = node.strip_prefix("FUNCEXPR")?;
    if !call.contains(":funcformat 2 ") {
        return None;
    }
    match nodes(&call[call.find(":args (")?..]).as_slice() {
        [only] => expression(only),
        _ => None,
    }
}

/// An argument's default as PostgreSQL deparses it: a literal as it is (`0`, `true`), or
/// quoted and cast to its type (`'NFC'::text`, `NULL::text`), named by `pg_type`.
#[derive(Debug, Clone, PartialEq)]
struct Constant {
    literal: String,
    cast_to: Option<i32>,
}

impl Constant {
    fn plain(literal: String) -> Constant {
        Constant {
            literal,
            cast_to: None,
        }
    }

    fn quoted(text: &str, type_oid: i32) -> Constant {
        Constant {
            literal: format!("'{}'", text.replace('\'', "''")),
            cast_to: Some(type_oid),
        }
    }

    fn sql(&self, types: &HashMap<i32, (String, i32)>) -> String {
        match self.cast_to {
            None => self.literal.clone(),
            Some(oid) => format!("{}::{}", self.literal, regtype_name(types, oid)),
        }
    }
}

/// A `CONST` node's fields (`:consttype 23 … :constvalue 4 [ 0 0 0 0 … ]`) as a default.
fn constant(node: &str) -> Option<Constant> {
    let field = |name: &str| {
        let at = node.find(&format!(":{name} "))? + name.len() + 2;
        node[at..].split_whitespace().next()
    };
    let type_oid: i32 = field("consttype")?.parse().ok()?;
    if field("constisnull")? == "true" {
        return Some(Constant {
            literal: "NULL".into(),
            cast_to: Some(type_oid),
        });
    }
    let bytes: Vec<u8> = node[node.find('[')? + 1..node.find(']')?]
        .split_whitespace()
        .map(|b| b.parse::<i16>().ok().map(|b| b as u8))
        .collect::<Option<_>>()?;
    let word = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    // A value of variable length: a 4-byte header, its length shifted left by two.
    let varlena = || {
        let length = (word(0)? >> 2) as usize;
        bytes.get(4..length)
    };
    let quoted = |text: &str| Some(Constant::quoted(text, type_oid));
    match type_oid {
        16 => Some(Constant::plain((bytes.first()? != &0).to_string())),
        23 => match word(0)? as i32 {
            n if n >= 0 => Some(Constant::plain(n.to_string())),
            n => quoted(&n.to_string()),
        },
        25 => quoted(std::str::from_utf8(varlena()?).ok()?),
        1700 => numeric(varlena()?).map(Constant::plain),
        // An array: its dimensions first; only the empty one is a default.
        1009 if word(4)? == 0 => quoted("{}"),
        // jsonb: a container header, its kind in the high bits and its size below.
        3802 => match u32::from_le_bytes(varlena()?.get(..4)?.try_into().ok()?) {
            0x2000_0000 => quoted("{}"),
            0x4000_0000 => quoted("[]"),
            _ => None,
        },
        _ => None,
    }
}

/// A `numeric` in PostgreSQL's short on-disk form (a header with its sign, display scale
/// and weight, then base-10000 digits), written out as a number.
fn numeric(value: &[u8]) -> Option<String> {
    let header = u16::from_le_bytes(value.get(..2)?.try_into().ok()?);
    if header & 0xC000 != 0x8000 {
        return None;
    }
    let negative = header & 0x2000 != 0;
    let scale = usize::from((header & 0x1F80) >> 7);
    let weight = i32::from(header & 0x3F) - if header & 0x40 != 0 { 64 } else { 0 };
    let digits: Vec<u16> = value[2..]
        .chunks_exact(2)
        .map(|d| u16::from_le_bytes([d[0], d[1]]))
        .collect();
    let digit = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut whole = String::new();
    for i in 0..=weight {
        whole.push_str(&format!("{:04}", digit(i)));
    }
    let whole = whole.trim_start_matches('0');
    let mut fraction = String::new();
    let mut i = weight + 1;
    while fraction.len() < scale {
        fraction.push_str(&format!("{:04}", digit(i)));
        i += 1;
    }
    fraction.truncate(scale);
    let sign = if negative { "-" } else { "" };
    let whole = if whole.is_empty() { "0" } else { whole };
    Some(match scale {
        0 => format!("{sign}{whole}"),
        _ => format!("{sign}{whole}.{fraction}"),
    })
}

/// Which arguments a list of them shows.
#[derive(Clone, Copy, PartialEq)]
enum Arguments {
    /// `pg_get_function_arguments`: all but a `TABLE` result's columns.
    All,
    /// `pg_get_function_identity_arguments`: the ones that tell overloads apart.
    Identity,
}

impl Routine {
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// `(mode, name, type)` of every argument.
    fn arguments(&self) -> Vec<(&str, &str, i32)> {
        let types = if self.all.is_empty() {
            &self.inputs
        } else {
            &self.all
        };
        types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mode = self.modes.get(i).map_or("i", String::as_str);
                let name = self.names.get(i).map_or("", String::as_str);
                (mode, name, *t)
            })
            .collect()
    }

    fn argument_list(&self, which: Arguments, types: &HashMap<i32, (String, i32)>) -> String {
        // The last inputs have the defaults, which only the full list shows.
        let inputs = self.inputs.len();
        let mut input = 0;
        self.arguments()
            .into_iter()
            .filter(|(mode, _, _)| match which {
                Arguments::All => *mode != "t",
                Arguments::Identity => !matches!(*mode, "t" | "o"),
            })
            .map(|(mode, name, t)| {
                let default = match mode {
                    "i" | "b" | "v" => {
                        input += 1;
                        (input + self.defaults.len())
                            .checked_sub(inputs + 1)
                            .and_then(|d| self.defaults.get(d)?.as_ref())
                            .filter(|_| which == Arguments::All)
                            .map(|d| d.sql(types))
                    }
                    _ => None,
                };
                let default = default.map_or(String::new(), |d| format!(" DEFAULT {d}"));
                let mode = match mode {
                    "o" => "OUT ",
                    "b" => "INOUT ",
                    "v" => "VARIADIC ",
                    _ => "",
                };
                let name = if name.is_empty() {
                    String::new()
                } else {
                    format!("{} ", quote_identifier(name))
                };
                format!("{mode}{name}{}{default}", regtype_name(types, t))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What it returns: a type, `SETOF` one, or `TABLE(columns)`.
    fn result(&self, types: &HashMap<i32, (String, i32)>) -> String {
        let columns: Vec<String> = self
            .arguments()
            .into_iter()
            .filter(|(mode, _, _)| *mode == "t")
            .map(|(_, name, t)| format!("{} {}", quote_identifier(name), regtype_name(types, t)))
            .collect();
        if !columns.is_empty() {
            return format!("TABLE({})", columns.join(", "));
        }
        let set = if self.returns_set { "SETOF " } else { "" };
        format!("{set}{}", regtype_name(types, self.result))
    }

    /// `CREATE OR REPLACE FUNCTION …`, as `pg_get_functiondef` writes it.
    fn definition(&self, types: &HashMap<i32, (String, i32)>) -> String {
        let procedure = self.kind == "p";
        let mut out = format!(
            "CREATE OR REPLACE {} pg_catalog.{}({})\n",
            if procedure { "PROCEDURE" } else { "FUNCTION" },
            quote_identifier(&self.name),
            self.argument_list(Arguments::All, types)
        );
        if !procedure {
            out.push_str(&format!(" RETURNS {}\n", self.result(types)));
        }
        let language = match self.language {
            13 => "c",
            14 => "sql",
            _ => "internal",
        };
        out.push_str(&format!(" LANGUAGE {language}\n"));
        let mut options = String::new();
        if self.kind == "w" {
            options.push_str(" WINDOW");
        }
        options.push_str(match self.volatility.as_str() {
            "i" => " IMMUTABLE",
            "s" => " STABLE",
            _ => "",
        });
        options.push_str(match self.parallel.as_str() {
            "s" => " PARALLEL SAFE",
            "r" => " PARALLEL RESTRICTED",
            _ => "",
        });
        for (on, word) in [
            (self.strict, " STRICT"),
            (self.security_definer, " SECURITY DEFINER"),
            (self.leakproof, " LEAKPROOF"),
        ] {
            if on {
                options.push_str(word);
            }
        }
        // The default cost is 1 for internal and C functions, 100 for others.
        let default_cost = if matches!(self.language, 12 | 13) {
            1.0
        } else {
            100.0
        };
        if self.cost != default_cost {
            options.push_str(&format!(" COST {}", self.cost));
        }
        if self.rows > 0.0 && self.rows != 1000.0 {
            options.push_str(&format!(" ROWS {}", self.rows));
        }
        if !self.support.is_empty() && self.support != "-" {
            options.push_str(&format!(" SUPPORT {}", self.support));
        }
        if !options.is_empty() {
            out.push_str(&options);
            out.push('\n');
        }
        out.push_str("AS ");
        if !self.binary.is_empty() {
            out.push_str(&format!("'{}', ", self.binary.replace('\'', "''")));
        }
        let mut quote = format!("${}", if procedure { "procedure" } else { "function" });
        while self.source.contains(&format!("{quote}$")) {
            quote.push('x');
        }
        out.push_str(&format!("{quote}${}{quote}$\n", self.source));
        out
    }
}

/// `name` as PostgreSQL's `quote_ident` writes it: in double quotes unless it is a
/// lower-case word that is not one of SQL's keywords PostgreSQL reserves in some place.
pub(super) fn quote_identifier(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain && !RESERVED_SOMEWHERE.contains(&name) {
        return name.to_string();
    }
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// PostgreSQL's keywords other than its unreserved ones (reserved, type or function names,
/// column names), which `quote_ident` quotes.
const RESERVED_SOMEWHERE: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

type Describe = fn(&Routine, &HashMap<i32, (String, i32)>) -> Result<Option<String>>;

/// The four functions, each a lookup of a function's OID among the built-in ones (NULL
/// for any other OID, as PostgreSQL answers for one it does not know).
pub(super) fn routine_functions(types: &PgTypes) -> Vec<ScalarUDF> {
    let describe: [(&str, Describe); 4] = [
        ("pg_get_functiondef", |r, types| {
            if r.kind == "a" {
                return Err(Error::plan(
                    "42809",
                    format!("\"{}\" is an aggregate function", r.name),
                ));
            }
            Ok(Some(r.definition(types)))
        }),
        ("pg_get_function_arguments", |r, types| {
            Ok(Some(r.argument_list(Arguments::All, types)))
        }),
        ("pg_get_function_identity_arguments", |r, types| {
            Ok(Some(r.argument_list(Arguments::Identity, types)))
        }),
        ("pg_get_function_result", |r, types| {
            Ok((r.kind != "p").then(|| r.result(types)))
        }),
    ];
    describe
        .into_iter()
        .map(|(name, describe)| {
            let routines = types.3.clone();
            let names = types.1.clone();
            let udf = move |args: &[ColumnarValue]| -> DfResult<ColumnarValue> {
                let oids = cast(&args[0].to_array(1)?, &DataType::Int64)?;
                let mut out = StringBuilder::new();
                for oid in oids.as_primitive::<Int64Type>() {
                    let routine = oid
                        .and_then(|oid| i32::try_from(oid).ok())
                        .and_then(|oid| routines.get(&oid));
                    let text = match routine {
                        Some(routine) => describe(routine, &names)
                            .map_err(|e| DataFusionError::External(Box::new(e)))?,
                        None => None,
                    };
                    out.append_option(text);
                }
                shaped_like(args, Arc::new(out.finish()))
            };
            create_udf(
                name,
                vec![DataType::Int64],
                DataType::Utf8,
                Volatility::Stable,
                Arc::new(udf),
            )
        })
        .collect()
}

pub(super) const REGPROCEDURE_OID: &str = "regprocedure_oid";

/// `regprocedure_oid('f(type, …)')`: the OID of the built-in function of that name and
/// those argument types, what `'f(text)'::regprocedure` is (psql's `\sf f(text)`); 42883
/// if there is none.
pub(super) fn regprocedure_oid(types: &PgTypes) -> ScalarUDF {
    let routines = types.3.clone();
    let by_name = types.0.clone();
    let names = types.1.clone();
    let udf = move |args: &[ColumnarValue]| -> DfResult<ColumnarValue> {
        let texts = cast(&args[0].to_array(1)?, &DataType::Utf8)?;
        let mut out = arrow::array::Int64Builder::new();
        for text in texts.as_string::<i32>() {
            let Some(text) = text else {
                out.append_null();
                continue;
            };
            let found = signature(text).and_then(|(name, arguments)| {
                let same_type = |given: &str, oid: i32| {
                    let given = type_alias(given);
                    by_name.get(given) == Some(&oid) || regtype_name(&names, oid) == given
                };
                routines.iter().find_map(|(oid, routine)| {
                    let matches = routine.name == name
                        && routine.inputs.len() == arguments.len()
                        && routine
                            .inputs
                            .iter()
                            .zip(&arguments)
                            .all(|(t, given)| same_type(given, *t));
                    matches.then_some(*oid)
                })
            });
            match found {
                Some(oid) => out.append_value(i64::from(oid)),
                None => {
                    return Err(DataFusionError::External(Box::new(Error::plan(
                        "42883",
                        format!("function \"{text}\" does not exist"),
                    ))));
                }
            }
        }
        shaped_like(args, Arc::new(out.finish()))
    };
    create_udf(
        REGPROCEDURE_OID,
        vec![DataType::Utf8],
        DataType::Int64,
        Volatility::Stable,
        Arc::new(udf),
    )
}

/// `f(type, …)` as the function's name (folded to lower case unless quoted; without a
/// `pg_catalog.` qualifier) and its argument types (lower case, modifiers such as
/// `numeric(10,2)`'s left out).
fn signature(text: &str) -> Option<(String, Vec<String>)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[..open].trim();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(name);
    let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => name.to_lowercase(),
    };
    let mut arguments = vec![];
    let mut depth = 0;
    let mut current = String::new();
    for c in text[open + 1..close].chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                arguments.push(std::mem::take(&mut current));
                continue;
            }
            _ if depth > 0 => continue,
            _ => {}
        }
        if depth == 0 && c != ')' {
            current.push(c);
        }
    }
    arguments.push(current);
    let arguments: Vec<String> = arguments
        .iter()
        .map(|a| {
            a.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .filter(|a| !a.is_empty())
        .collect();
    Some((name, arguments))
}

/// PostgreSQL's other names of built-in types, as `pg_type` names them.
fn type_alias(name: &str) -> &str {
    match name {
        "int" => "int4",
        "float" => "float8",
        "decimal" => "numeric",
        "varchar" => "character varying",
        "char" => "bpchar",
        "timestamptz" => "timestamp with time zone",
        "timetz" => "time with time zone",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_as_postgres_quotes_them() {
        assert_eq!(quote_identifier("now"), "now");
        assert_eq!(quote_identifier("left"), "\"left\"");
        assert_eq!(quote_identifier("Upper"), "\"Upper\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn signatures_read_as_regprocedure_reads_them() {
        assert_eq!(
            signature("pg_catalog.length( text )"),
            Some(("length".into(), vec!["text".into()]))
        );
        assert_eq!(
            signature("round(numeric(10,2), Integer)"),
            Some(("round".into(), vec!["numeric".into(), "integer".into()]))
        );
        assert_eq!(signature("now()"), Some(("now".into(), vec![])));
        assert_eq!(signature("now"), None);
    }

    #[test]
    fn built_in_acls_name_runnels_superuser() {
        use super::super::catalogs::with_superuser;
        assert_eq!(with_superuser("postgres=X/postgres"), "runnel=X/runnel");
        assert_eq!(with_superuser("=X/postgres"), "=X/runnel");
        assert_eq!(
            with_superuser("postgres_ro=r/postgres"),
            "postgres_ro=r/runnel"
        );
    }

    #[test]
    fn argument_defaults_deparse_as_postgres_deparses_them() {
        let constant = |type_oid: i32, bytes: &str| {
            format!(
                "{{CONST :consttype {type_oid} :consttypmod -1 :constcollid 0 :constlen -1 \
                 :constbyval false :constisnull false :location -1 :constvalue 8 [ {bytes} ]}}"
            )
        };
        let tree = format!(
            "({} {} {} {} {} {} {{FUNCEXPR :funcid 1746 :funcresulttype 701 :funcretset false \
             :funcvariadic false :funcformat 2 :funccollid 0 :inputcollid 0 :args ({}) \
             :location -1}} {{OPEXPR :opno 1}})",
            constant(23, "60 0 0 0 0 0 0 0"),
            constant(16, "1 0 0 0 0 0 0 0"),
            constant(25, "28 0 0 0 78 70 67"),
            constant(3802, "32 0 0 0 0 0 0 32"),
            constant(1009, "64 0 0 0 0 0 0 0 0 0 0 0 25 0 0 0"),
            constant(1700, "32 0 0 0 127 -126 -23 3"),
            constant(1700, "24 0 0 0 -128 -128"),
        );
        let expected = [
            Some("60"),
            Some("true"),
            Some("'NFC'::text"),
            Some("'{}'::jsonb"),
            Some("'{}'::text[]"),
            Some("0.1001"),
            Some("0.0"),
            None,
        ];
        let types: HashMap<i32, (String, i32)> = [
            (23, ("int4", 0)),
            (25, ("text", 0)),
            (1009, ("_text", 25)),
            (3802, ("jsonb", 0)),
        ]
        .into_iter()
        .map(|(oid, (name, element))| (oid, (name.to_string(), element)))
        .collect();
        let deparsed: Vec<Option<String>> = argument_defaults(&tree)
            .iter()
            .map(|d| d.as_ref().map(|d| d.sql(&types)))
            .collect();
        assert_eq!(deparsed, expected.map(|d| d.map(String::from)).to_vec());
    }

    #[test]
    fn lists_read_as_pg_catalog_writes_them() {
        assert_eq!(oid_list("17 19"), vec![17, 19]);
        assert_eq!(oid_list("[23, 26]"), vec![23, 26]);
        assert_eq!(text_list("['i', 'o']"), vec!["i", "o"]);
        assert!(text_list("").is_empty());
        // An argument without a name keeps its place.
        assert_eq!(text_list("['', 'b']"), vec!["", "b"]);
    }
}
