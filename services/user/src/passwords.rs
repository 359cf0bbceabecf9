//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane). Each hash needs
//! 19 MiB of working memory, so hashing runs on a few threads of its own (one per core), each
//! reusing one buffer, behind a short queue: a burst of logins waits there or is refused with
//! RESOURCE_EXHAUSTED, and memory stays at threads × 19 MiB instead of growing by a gigabyte that
//! the allocator then keeps.

use std::{
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread,
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString, rand_core::OsRng},
};
use shop_common::Error;

/// Hashes waiting per hashing thread before new ones are refused.
const QUEUE_PER_THREAD: usize = 8;

#[derive(Clone)]
pub(crate) struct Passwords {
    /// Checked when the email is unknown, so that path costs one hash like a wrong password.
    decoy_hash: Arc<str>,
    hasher: Hasher,
}

impl Passwords {
    pub(crate) fn new() -> Result<Self, Error> {
        let threads = thread::available_parallelism().map_or(1, |n| n.get().min(8));
        Ok(Self {
            decoy_hash: hash_now("decoy password nobody has", &mut Vec::new())?.into(),
            hasher: Hasher::start(threads, threads * QUEUE_PER_THREAD)?,
        })
    }

    pub(crate) async fn hash(&self, password: &str) -> Result<String, Error> {
        let password = password.to_owned();
        self.hasher
            .run(move |memory| hash_now(&password, memory))
            .await?
    }

    /// Whether `password` matches `stored`; with no stored hash, checks the decoy and says no.
    pub(crate) async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, Error> {
        let (hash, known) = match stored {
            Some(hash) => (hash.to_owned(), true),
            None => (self.decoy_hash.to_string(), false),
        };
        let password = password.to_owned();
        let matches = self
            .hasher
            .run(move |memory| verify_now(&password, &hash, memory))
            .await??;
        Ok(known && matches)
    }
}

/// Work for a hashing thread, given the thread's reusable working memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The hashing threads and the queue in front of them; they stop when the last clone is gone.
#[derive(Clone)]
struct Hasher {
    jobs: SyncSender<Job>,
}

impl Hasher {
    fn start(threads: usize, queue: usize) -> Result<Self, Error> {
        let (jobs, waiting) = sync_channel::<Job>(queue);
        let waiting = Arc::new(Mutex::new(waiting));
        for index in 0..threads {
            let waiting = waiting.clone();
            thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || work(&waiting))
                .map_err(Error::internal)?;
        }
        Ok(Self { jobs })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = done.send(work(memory));
        });
        self.jobs.try_send(job).map_err(|error| match error {
            TrySendError::Full(_) => Error::exhausted(
                "too many sign-ins at once; retry in a moment",
                Duration::from_secs(1),
            ),
            TrySendError::Disconnected(_) => Error::internal("the password hasher has stopped"),
        })?;
        result
            .await
            .map_err(|_| Error::internal("the password hasher dropped a job"))
    }
}

fn work(waiting: &Mutex<Receiver<Job>>) {
    let mut memory = Vec::new();
    loop {
        let next = waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .recv();
        match next {
            Ok(job) => job(&mut memory),
            Err(_) => return,
        }
    }
}

fn internal(error: impl std::fmt::Display) -> Error {
    Error::internal(error.to_string())
}

/// argon2 of `password` and `salt` under `params`, in `memory` (grown once, then reused).
fn argon2(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &str,
    salt: &[u8],
    output_len: usize,
    memory: &mut Vec<Block>,
) -> Result<Output, Error> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let argon2 = Argon2::new(algorithm, version, params);
    Output::init_with(output_len, |out| {
        argon2
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(internal)
}

/// A new PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) for `password`.
fn hash_now(password: &str, memory: &mut Vec<Block>) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes).map_err(internal)?;
    let params = Params::default();
    let output = argon2(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password,
        raw_salt,
        Params::DEFAULT_OUTPUT_LEN,
        memory,
    )?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(internal)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` is the one `stored` (a PHC string) was made from; compared in constant
/// time (`Output`'s equality).
fn verify_now(password: &str, stored: &str, memory: &mut Vec<Block>) -> Result<bool, Error> {
    let stored = PasswordHash::new(stored).map_err(internal)?;
    let expected = stored
        .hash
        .ok_or_else(|| internal("a stored hash without output"))?;
    let salt = stored
        .salt
        .ok_or_else(|| internal("a stored hash without salt"))?;
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes).map_err(internal)?;
    let algorithm = Algorithm::try_from(stored.algorithm).map_err(internal)?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(internal)?
        .unwrap_or_default();
    let params = Params::try_from(&stored).map_err(internal)?;
    let output = argon2(
        algorithm,
        version,
        params,
        password,
        raw_salt,
        expected.len(),
        memory,
    )?;
    Ok(output == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_is_argon2id_and_verifies_only_its_password() -> Result<(), Error> {
        let passwords = Passwords::new()?;
        let hash = passwords.hash("correct horse battery").await?;
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(
            passwords
                .verify("correct horse battery", Some(&hash))
                .await?
        );
        assert!(!passwords.verify("wrong horse battery", Some(&hash)).await?);
        Ok(())
    }

    #[tokio::test]
    async fn without_a_stored_hash_nothing_verifies_not_even_the_decoy() -> Result<(), Error> {
        let passwords = Passwords::new()?;
        assert!(!passwords.verify("decoy password nobody has", None).await?);
        Ok(())
    }

    #[tokio::test]
    async fn a_full_queue_refuses_with_resource_exhausted_instead_of_growing() -> Result<(), Error>
    {
        // One thread, a queue of one: a job running and one waiting fill it.
        let hasher = Hasher::start(1, 1)?;
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let running = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.run(move |_| blocked.recv().is_ok()).await }
        });
        // Let the worker take the first job, then queue a second.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let waiting = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.run(|_| true).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let refused = hasher.run(|_| true).await;
        assert!(
            matches!(refused, Err(Error::ResourceExhausted { .. })),
            "{refused:?}"
        );
        let _ = release.send(());
        assert!(matches!(running.await, Ok(Ok(true))));
        assert!(matches!(waiting.await, Ok(Ok(true))));
        Ok(())
    }
}
