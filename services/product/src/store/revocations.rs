//! Revoked sessions on MongoDB, for the catalogue's auth layer: one document per user holding the
//! newest revocation. `$max` makes applying an event idempotent and order-free by itself (as
//! releasing a reservation is), so no processed-events record is needed here; on SQL the common
//! `SqlRevocations` does the same with `processed_events`.

use futures::TryStreamExt as _;
use mongodb::{
    Collection, Database,
    bson::{Document, doc},
};
use serde::{Deserialize, Serialize};
use shop_common::{
    BoxFuture, Error,
    auth::{Revocation, RevocationStore, revocation::spent_before},
};

use super::mongo::{is_duplicate_key, unavailable};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RevocationDoc {
    #[serde(rename = "_id")]
    user_id: String,
    not_before_ms: i64,
    forget_after_ms: i64,
}

pub(crate) struct MongoRevocations {
    revoked: Collection<RevocationDoc>,
}

impl MongoRevocations {
    pub(super) fn new(db: &Database) -> Self {
        Self {
            revoked: db.collection("revoked_sessions"),
        }
    }

    async fn upsert(&self, revocation: &Revocation) -> Result<(), mongodb::error::Error> {
        let update: Document = doc! { "$max": {
            "not_before_ms": revocation.not_before_ms,
            "forget_after_ms": revocation.forget_after_ms,
        } };
        self.revoked
            .update_one(doc! { "_id": &revocation.user_id }, update)
            .upsert(true)
            .await
            .map(|_| ())
    }
}

impl RevocationStore for MongoRevocations {
    fn record<'a>(
        &'a self,
        _consumer: &'a str,
        _event_id: &'a str,
        revocation: &'a Revocation,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            match self.upsert(revocation).await {
                // Two upserts of a new user raced and one inserted first: now it updates.
                Err(error) if is_duplicate_key(&error) => {
                    self.upsert(revocation).await.map_err(unavailable)
                }
                done => done.map_err(unavailable),
            }
        })
    }

    fn load(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<Revocation>, Error>> {
        Box::pin(async move {
            let docs: Vec<RevocationDoc> = self
                .revoked
                .find(doc! { "forget_after_ms": { "$gte": spent_before(now_ms) } })
                .await
                .map_err(unavailable)?
                .try_collect()
                .await
                .map_err(unavailable)?;
            Ok(docs
                .into_iter()
                .map(|doc| Revocation {
                    user_id: doc.user_id,
                    not_before_ms: doc.not_before_ms,
                    forget_after_ms: doc.forget_after_ms,
                })
                .collect())
        })
    }

    fn forget_spent(&self, now_ms: i64) -> BoxFuture<'_, Result<u64, Error>> {
        Box::pin(async move {
            let deleted = self
                .revoked
                .delete_many(doc! { "forget_after_ms": { "$lt": spent_before(now_ms) } })
                .await
                .map_err(unavailable)?;
            Ok(deleted.deleted_count)
        })
    }
}
