//! user-service over real gRPC, on SQLite and on PostgreSQL (`DATABASE_URL`; skipped, said so,
//! without it). Every test of `suite` runs once per backend.

mod binary;
mod helpers;
mod memory;
mod suite;
mod throttle;

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    crate::suite::$test(crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    crate::suite::$test(crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_backends!(
    register_login_me_and_refresh_then_reusing_a_spent_refresh_token_revokes_its_family,
    registration_and_login_errors_are_clear_and_do_not_tell_unknown_emails_apart,
    forged_expired_and_foreign_tokens_are_unauthenticated_and_roles_are_enforced,
    the_jwks_verifies_issued_tokens_with_pyjwt,
    a_token_signed_with_the_old_key_still_verifies_after_a_new_key_signs,
    service_clients_get_short_lived_service_tokens,
    accounts_are_managed_by_their_owner_or_an_admin,
    other_services_fetch_the_jwks_and_their_own_service_token,
);
