//! The SQL a [`TxnQuery`] becomes, shared by the SQLite and PostgreSQL
//! readers: the same filters in the same order, with each store's own
//! placeholders (`?1` or `$1`) and its own parameter types.

use super::record::TxnQuery;

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SqlValue {
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
}

/// How a store writes its numbered placeholders.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Placeholder {
    /// SQLite: `?1`, `?2`, …
    Question,
    /// PostgreSQL: `$1`, `$2`, …
    Dollar,
}

/// `SELECT {columns} FROM txn WHERE …` for `query` (with `pan_hash`, the
/// keyed hash of `query.pan`, when there is one), ordered by time and id,
/// and the values to bind, in placeholder order. With `approved_only` the
/// caller drops rows after reading, so the limit is left to it too.
pub(crate) fn txn_query(
    columns: &str,
    query: &TxnQuery,
    pan_hash: Option<&[u8]>,
    placeholder: Placeholder,
) -> (String, Vec<SqlValue>) {
    let mut sql = format!("SELECT {columns} FROM txn WHERE 1 = 1");
    let mut values = Vec::new();
    let mut bind = |sql: &mut String, clause: &str, value: SqlValue| {
        values.push(value);
        let mark = match placeholder {
            Placeholder::Question => format!("?{}", values.len()),
            Placeholder::Dollar => format!("${}", values.len()),
        };
        sql.push_str(&clause.replace('?', &mark));
    };
    if let Some(rrn) = &query.rrn {
        bind(
            &mut sql,
            " AND (terminal_rrn = ? OR upstream_rrn = ?)",
            SqlValue::Text(rrn.clone()),
        );
    }
    if let Some((terminal, stan)) = &query.terminal_stan {
        bind(
            &mut sql,
            " AND terminal_id = ?",
            SqlValue::Text(terminal.clone()),
        );
        bind(
            &mut sql,
            " AND terminal_stan = ?",
            SqlValue::Text(stan.clone()),
        );
    }
    if let Some(last4) = &query.last4 {
        bind(
            &mut sql,
            " AND pan_last4 = ?",
            SqlValue::Text(last4.clone()),
        );
    }
    if let Some(pan) = &query.pan {
        // The hash has no index (SQLite schema 2): the last four digits narrow first.
        bind(
            &mut sql,
            " AND pan_last4 = ?",
            SqlValue::Text(pan.last4().to_owned()),
        );
    }
    if let Some(hash) = pan_hash {
        bind(
            &mut sql,
            " AND pan_hash = ?",
            SqlValue::Bytes(hash.to_vec()),
        );
    }
    if let Some(since) = query.range.since_ms {
        bind(&mut sql, " AND received_at_ms >= ?", SqlValue::Int(since));
    }
    if let Some(until) = query.range.until_ms {
        bind(&mut sql, " AND received_at_ms < ?", SqlValue::Int(until));
    }
    if let Some(terminal) = &query.terminal {
        bind(
            &mut sql,
            " AND terminal_id = ?",
            SqlValue::Text(terminal.clone()),
        );
    }
    if let Some(after) = query.after {
        bind(&mut sql, " AND id > ?", SqlValue::Int(after.0));
    }
    if let Some(original) = query.original {
        bind(&mut sql, " AND original_id = ?", SqlValue::Int(original.0));
    }
    if let Some(by) = query.decided_by {
        bind(
            &mut sql,
            " AND decided_by = ?",
            SqlValue::Text(by.as_str().to_owned()),
        );
    }
    if query.approved_only {
        // Which codes approve is `ResponseCode::is_approval`'s to say, after
        // reading; here only the unanswered are left out.
        sql.push_str(" AND response_code IS NOT NULL");
    }
    sql.push_str(" ORDER BY received_at_ms, id");
    if let Some(limit) = query.limit.filter(|_| !query.approved_only) {
        bind(
            &mut sql,
            " LIMIT ?",
            SqlValue::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        );
    }
    (sql, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::TxnId;

    #[test]
    fn filters_bind_in_order_with_each_stores_placeholders() {
        let query = TxnQuery {
            rrn: Some("123456789012".into()),
            after: Some(TxnId(7)),
            limit: Some(5),
            ..TxnQuery::default()
        };
        let (sql, values) = txn_query("id", &query, None, Placeholder::Dollar);
        assert_eq!(
            sql,
            "SELECT id FROM txn WHERE 1 = 1 AND (terminal_rrn = $1 OR upstream_rrn = $1) \
             AND id > $2 ORDER BY received_at_ms, id LIMIT $3"
        );
        assert_eq!(
            values,
            [
                SqlValue::Text("123456789012".into()),
                SqlValue::Int(7),
                SqlValue::Int(5)
            ]
        );
        let (sql, _) = txn_query("id", &query, None, Placeholder::Question);
        assert!(
            sql.contains("terminal_rrn = ?1 OR upstream_rrn = ?1"),
            "{sql}"
        );
    }

    #[test]
    fn approved_only_leaves_the_limit_to_the_caller() {
        let query = TxnQuery {
            approved_only: true,
            limit: Some(5),
            ..TxnQuery::default()
        };
        let (sql, values) = txn_query("id", &query, None, Placeholder::Question);
        assert!(sql.ends_with("AND response_code IS NOT NULL ORDER BY received_at_ms, id"));
        assert!(values.is_empty());
    }
}
