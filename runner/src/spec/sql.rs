//! The check that a transform step's SQL is exactly one read-only query.

use std::ops::ControlFlow;

use datafusion::error::DataFusionError;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Query, SetExpr, Statement, Visit, Visitor};
use datafusion::sql::sqlparser::parser::ParserError;

/// Why a step's SQL was refused, with a 1-based position inside the SQL when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlProblem {
    pub message: String,
    pub position: Option<(usize, usize)>,
}

impl SqlProblem {
    fn new(message: impl Into<String>) -> SqlProblem {
        SqlProblem {
            message: message.into(),
            position: None,
        }
    }
}

const ONE_QUERY: &str = "a transform step is exactly one read-only query (SELECT ... FROM input)";

/// Parses `sql` with DataFusion's parser and accepts exactly one query statement that
/// neither writes (INSERT/UPDATE/DELETE/MERGE, also inside a WITH) nor creates (SELECT INTO).
pub fn check_read_only_query(sql: &str) -> Result<(), SqlProblem> {
    if sql.trim().is_empty() {
        return Err(SqlProblem::new(
            "is empty; a transform step needs one query",
        ));
    }
    let statements = DFParser::parse_sql(sql).map_err(parse_problem)?;
    let statement = match statements.len() {
        0 => {
            return Err(SqlProblem::new(
                "holds no statement; a transform step needs one query",
            ));
        }
        1 => &statements[0],
        n => {
            return Err(SqlProblem::new(format!(
                "holds {n} statements; {ONE_QUERY}"
            )));
        }
    };
    let statement = match statement {
        DFStatement::Statement(s) => s.as_ref(),
        DFStatement::CreateExternalTable(_) => {
            return Err(refused("CREATE EXTERNAL TABLE"));
        }
        DFStatement::CopyTo(_) => return Err(refused("COPY")),
        DFStatement::Explain(_) => return Err(refused("EXPLAIN")),
        DFStatement::Reset(_) => return Err(refused("RESET")),
    };
    if !matches!(statement, Statement::Query(_)) {
        return Err(refused(&describe(statement)));
    }
    match statement.visit(&mut ReadOnly) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(what) => Err(refused(&what)),
    }
}

fn refused(what: &str) -> SqlProblem {
    SqlProblem::new(format!("{what} is not allowed: {ONE_QUERY}"))
}

/// The leading keywords of a statement, for messages (`INSERT`, `CREATE TABLE`).
fn describe(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(3).collect();
    let take = match words.first().map(|w| w.to_ascii_uppercase()) {
        Some(w) if ["CREATE", "DROP", "ALTER", "TRUNCATE"].contains(&w.as_str()) => {
            // `CREATE TABLE`, `CREATE OR REPLACE VIEW`: keep the keywords, not the name.
            words
                .iter()
                .take_while(|w| w.chars().all(|c| c.is_ascii_uppercase()))
                .count()
                .max(1)
        }
        _ => 1,
    };
    words[..take.min(words.len())].join(" ")
}

struct ReadOnly;

impl Visitor for ReadOnly {
    type Break = String;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<String> {
        if matches!(statement, Statement::Query(_)) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(describe(statement))
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if selects_into(&query.body) {
            ControlFlow::Break("SELECT INTO".to_string())
        } else {
            ControlFlow::Continue(())
        }
    }
}

fn selects_into(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(select) => select.into.is_some(),
        SetExpr::SetOperation { left, right, .. } => selects_into(left) || selects_into(right),
        _ => false,
    }
}

/// The parser's message without its position, and the position apart.
fn parse_problem(error: DataFusionError) -> SqlProblem {
    let message = match &error {
        DataFusionError::SQL(e, _) => match e.as_ref() {
            ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
            ParserError::RecursionLimitExceeded => "nests too deeply".to_string(),
        },
        other => other.to_string(),
    };
    let (text, position) = split_position(&message);
    SqlProblem {
        message: format!("is not valid SQL: {text}"),
        position,
    }
}

fn split_position(message: &str) -> (String, Option<(usize, usize)>) {
    if let Some(at) = message.rfind(" at Line: ") {
        let tail = &message[at + " at Line: ".len()..];
        if let Some((line, column)) = tail.split_once(", Column: ")
            && let (Ok(line), Ok(column)) = (line.trim().parse(), column.trim().parse())
        {
            return (message[..at].to_string(), Some((line, column)));
        }
    }
    (message.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sql: &str) -> String {
        check_read_only_query(sql).unwrap_err().message
    }

    #[test]
    fn accepts_one_query() {
        for sql in [
            "SELECT * FROM input",
            "select a, b from input where a > 1;",
            "WITH x AS (SELECT a FROM input) SELECT * FROM x UNION ALL SELECT a FROM input",
            "SELECT CAST(pickup_at AS TIMESTAMP) AS pickup_at, fare FROM input WHERE fare >= 0",
            "VALUES (1, 2)",
        ] {
            assert_eq!(check_read_only_query(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn rejects_ddl_dml_copy_and_several_statements() {
        let cases = [
            ("CREATE TABLE t (a INT)", "CREATE TABLE is not allowed"),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'x'",
                "CREATE EXTERNAL TABLE is not allowed",
            ),
            ("DROP TABLE input", "DROP TABLE is not allowed"),
            ("INSERT INTO t SELECT * FROM input", "INSERT is not allowed"),
            ("UPDATE input SET a = 1", "UPDATE is not allowed"),
            ("DELETE FROM input", "DELETE is not allowed"),
            ("COPY input TO 'x.csv'", "COPY is not allowed"),
            ("SELECT * INTO t FROM input", "SELECT INTO is not allowed"),
            ("SELECT 1; SELECT 2", "holds 2 statements"),
            ("EXPLAIN SELECT * FROM input", "EXPLAIN"),
            ("SET x = 1", "is not allowed"),
            ("   ", "is empty"),
        ];
        for (sql, expected) in cases {
            let got = message(sql);
            assert!(got.contains(expected), "{sql}: {got}");
        }
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let problem = check_read_only_query("SELECT a\n  FROM input WHERE a = = 1").unwrap_err();
        assert!(
            problem.message.starts_with("is not valid SQL: "),
            "{problem:?}"
        );
        assert!(!problem.message.contains("Line:"), "{problem:?}");
        assert_eq!(problem.position.map(|p| p.0), Some(2), "{problem:?}");
    }
}
