//! A TLS configuration built from PEM files and built again when their content changes. Each
//! new connection asks for the current one, which reads the files (a few kilobytes) and
//! compares them with what it was built from: a rotation applies to the next handshake, with
//! no timer and no restart. A change that cannot be used (a half-written file, a key that does
//! not match its certificate yet) keeps the last good configuration and is logged once.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use crate::config::ConfigError;

/// A file-valued setting: the setting's name, for messages, and the path it holds.
#[derive(Debug, Clone)]
pub(crate) struct PemFile {
    setting: &'static str,
    path: PathBuf,
}

impl PemFile {
    pub(crate) fn new(setting: &'static str, path: &Path) -> Self {
        Self {
            setting,
            path: path.to_owned(),
        }
    }

    fn error(&self, reason: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(self.setting, format!("{}: {reason}", self.path.display()))
    }

    fn read(&self) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(&self.path).map_err(|e| self.error(format!("cannot read it: {e}")))
    }

    /// Every `CERTIFICATE` block of `pem`, in order (a chain, or a CA bundle); none is an error.
    pub(crate) fn certificates(
        &self,
        pem: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(format!("not a PEM file: {e}")))?;
        if certificates.is_empty() {
            return Err(self.error("holds no PEM certificate"));
        }
        Ok(certificates)
    }

    /// The private key of `pem` (PKCS#8, PKCS#1 or SEC1).
    pub(crate) fn private_key(&self, pem: &[u8]) -> Result<PrivateKeyDer<'static>, ConfigError> {
        PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| self.error(format!("holds no usable PEM private key: {e}")))
    }

    /// A rustls refusal of what these files hold, naming this file's setting.
    pub(crate) fn refused(&self, error: impl std::fmt::Display) -> ConfigError {
        self.error(error)
    }
}

/// rustls refused a certificate and key as a pair: blame the file at fault (a certificate it
/// cannot use, such as an X.509 v1 one, or a key that is not the certificate's).
pub(crate) fn pair_refused(cert: &PemFile, key: &PemFile, error: &rustls::Error) -> ConfigError {
    match error {
        rustls::Error::InvalidCertificate(_) => {
            cert.refused(format!("not a usable certificate: {error}"))
        }
        _ => key.refused(format!("does not fit the certificate: {error}")),
    }
}

type Build<T> = Box<dyn Fn(&[Vec<u8>]) -> Result<T, ConfigError> + Send + Sync>;

/// `T` built from `files` by `build` (which gets their contents in the same order).
pub(crate) struct Reloading<T> {
    files: Vec<PemFile>,
    build: Build<T>,
    state: Mutex<State<T>>,
}

struct State<T> {
    contents: Vec<Vec<u8>>,
    current: Arc<T>,
    /// What was last wrong with the files, so a broken rotation is logged once, not per handshake.
    problem: Option<String>,
}

impl<T> Reloading<T> {
    /// Reads and builds now: at start a missing or invalid file is a configuration error.
    pub(crate) fn load(files: Vec<PemFile>, build: Build<T>) -> Result<Self, ConfigError> {
        let contents = files
            .iter()
            .map(PemFile::read)
            .collect::<Result<Vec<_>, _>>()?;
        let current = Arc::new(build(&contents)?);
        Ok(Self {
            files,
            build,
            state: Mutex::new(State {
                contents,
                current,
                problem: None,
            }),
        })
    }

    /// The configuration for a new connection: rebuilt first if the files changed and the new
    /// content is usable, else the last good one.
    pub(crate) fn current(&self) -> Arc<T> {
        // A panic elsewhere cannot leave the state half-updated: it is replaced whole below.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let rebuilt = self
            .files
            .iter()
            .map(PemFile::read)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|contents| {
                if contents == state.contents {
                    return Ok(None);
                }
                let built = (self.build)(&contents)?;
                Ok(Some((contents, built)))
            });
        match rebuilt {
            Ok(None) => state.problem = None,
            Ok(Some((contents, built))) => {
                state.contents = contents;
                state.current = Arc::new(built);
                state.problem = None;
                tracing::info!(files = %self.names(), "tls files changed; new connections use them");
            }
            Err(error) => {
                let problem = error.to_string();
                if state.problem.as_ref() != Some(&problem) {
                    tracing::warn!(%error, "tls files changed but cannot be used; keeping the last good ones");
                    state.problem = Some(problem);
                }
            }
        }
        state.current.clone()
    }

    fn names(&self) -> String {
        self.files
            .iter()
            .map(|f| f.setting)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
