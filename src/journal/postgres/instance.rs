//! Instances sharing one database: each keeps a heartbeat row fresh, and one
//! whose row has gone stale is dead. A survivor claims a dead instance's
//! recovery in one transaction — its forwarded requests left unanswered
//! become the survivor's in-doubt transactions — so it happens once, and a
//! survivor that dies in turn passes them on the same way.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::journal::{now_ms, HealthCell, JournalError};

/// Marks `instance` alive now; at start-up (`starting`) also forgets that it
/// was recovered, so it can be recovered again if it dies again.
pub(crate) async fn beat(
    client: &impl tokio_postgres::GenericClient,
    instance: &str,
    starting: bool,
) -> Result<(), tokio_postgres::Error> {
    let now = now_ms();
    if starting {
        client
            .execute(
                "INSERT INTO instance (id, started_at_ms, heartbeat_at_ms) VALUES ($1, $2, $2)
                 ON CONFLICT (id) DO UPDATE SET started_at_ms = $2, heartbeat_at_ms = $2,
                    recovered_by = NULL, recovered_at_ms = NULL",
                &[&instance, &now],
            )
            .await?;
    } else {
        client
            .execute(
                "INSERT INTO instance (id, started_at_ms, heartbeat_at_ms) VALUES ($1, $2, $2)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at_ms = $2",
                &[&instance, &now],
            )
            .await?;
    }
    Ok(())
}

/// Keeps this instance's heartbeat fresh every `every` until `stop`. A
/// failed beat marks the journal not ready (so `/readyz` says so while the
/// database is unreachable, traffic or not); the next good one, ready.
pub(crate) fn spawn_heartbeat(
    pool: Pool,
    instance: Arc<str>,
    name: Arc<str>,
    every: Duration,
    health: Arc<HealthCell>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let result = match pool.get().await {
                Ok(client) => beat(&**client, &instance, false)
                    .await
                    .map_err(|e| -> crate::journal::Cause { Arc::new(e) }),
                Err(e) => Err(Arc::new(e) as crate::journal::Cause),
            };
            match result {
                Ok(()) => {
                    if failing {
                        tracing::info!(%instance, "journal heartbeat written again");
                    }
                    failing = false;
                    health.succeeded();
                }
                Err(cause) => {
                    let error = JournalError::Write {
                        path: name.as_ref().into(),
                        op: "heartbeat",
                        cause,
                    };
                    if !failing {
                        tracing::error!(%instance, %error, "journal heartbeat not written");
                    }
                    failing = true;
                    health.failed(&error);
                }
            }
        }
    });
}

/// A dead instance whose recovery this one took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub instance: String,
    pub heartbeat_at_ms: i64,
    pub transactions: u64,
}

/// Claims the recovery of every instance whose heartbeat is older than
/// `dead_after_ms` and that nobody has recovered since its last beat: its
/// forwarded requests with no answer and no reversal become `me`'s, marked
/// as recovered so they are reversed at once whatever their age. One
/// transaction, the dead instances' rows locked (SKIP LOCKED), so two
/// survivors never both take one.
pub(crate) async fn claim_dead(
    client: &mut deadpool_postgres::Object,
    me: &str,
    dead_after_ms: i64,
) -> Result<Vec<Recovered>, tokio_postgres::Error> {
    let now = now_ms();
    let tx = client.transaction().await?;
    let dead = tx
        .query(
            "SELECT id, heartbeat_at_ms FROM instance
             WHERE id != $1 AND heartbeat_at_ms < $2
               AND (recovered_at_ms IS NULL OR recovered_at_ms < heartbeat_at_ms)
             FOR UPDATE SKIP LOCKED",
            &[&me, &(now - dead_after_ms)],
        )
        .await?;
    let mut recovered = Vec::with_capacity(dead.len());
    for row in &dead {
        let instance: String = row.try_get(0)?;
        let heartbeat_at_ms: i64 = row.try_get(1)?;
        let transactions = tx
            .execute(
                "UPDATE txn SET instance_id = $2, recovered_from = $1
                 WHERE instance_id = $1 AND issuer IS NOT NULL AND response_code IS NULL
                   AND reversal = 'none'",
                &[&instance, &me],
            )
            .await?;
        tx.execute(
            "UPDATE instance SET recovered_by = $2, recovered_at_ms = $3 WHERE id = $1",
            &[&instance, &me, &now],
        )
        .await?;
        recovered.push(Recovered {
            instance,
            heartbeat_at_ms,
            transactions,
        });
    }
    tx.commit().await?;
    Ok(recovered)
}
