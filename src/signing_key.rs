//! The token signing key of `shop up`. Without `--signing-key-file`, the first start generates a
//! key into the data dir (`signing-key.pem`, mode 0600) and later starts reuse it, so a restart
//! keeps everyone signed in, as it does with a configured key.

use std::{
    fs,
    io::{ErrorKind, Write as _},
    path::{Path, PathBuf},
};

use shop_common::config::ConfigError;

/// The key file's name inside the data dir.
pub const FILE_NAME: &str = "signing-key.pem";

/// The data dir's key file, generated if missing.
pub fn in_data_dir(data_dir: &Path) -> Result<PathBuf, ConfigError> {
    let bad = |error: String| ConfigError::new("SHOP_DATA_DIR", error);
    fs::create_dir_all(data_dir)
        .map_err(|e| bad(format!("cannot create {}: {e}", data_dir.display())))?;
    let path = data_dir.join(FILE_NAME);
    if path.exists() {
        keep_private(&path)?;
        return Ok(path);
    }
    let pem = user_service::SigningKeys::generate_pem().map_err(|e| bad(e.to_string()))?;
    match create_private(&path) {
        Ok(mut file) => {
            file.write_all(pem.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| bad(format!("cannot write {}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "generated the token signing key");
        }
        // A concurrent start wrote it first: use theirs.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => keep_private(&path)?,
        Err(e) => return Err(bad(format!("cannot create {}: {e}", path.display()))),
    }
    Ok(path)
}

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// A private key others can read is refused rather than used: whoever read it can mint tokens.
#[cfg(unix)]
fn keep_private(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(path)
        .map_err(|e| {
            ConfigError::new(
                "SHOP_DATA_DIR",
                format!("cannot read {}: {e}", path.display()),
            )
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(ConfigError::new(
            "SHOP_DATA_DIR",
            format!(
                "{} is readable by other users (mode {:o}); run `chmod 600 {}` or delete it to \
                 generate a new key",
                path.display(),
                mode & 0o777,
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn keep_private(_path: &Path) -> Result<(), ConfigError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_writes_a_private_key_and_later_starts_reuse_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let path = in_data_dir(&data)?;
        let first = fs::read_to_string(&path)?;
        assert!(first.contains("PRIVATE KEY"), "{first}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(in_data_dir(&data)?, path);
        assert_eq!(
            fs::read_to_string(&path)?,
            first,
            "the key changed on restart"
        );
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_is_refused_with_the_fix() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir()?;
        let path = in_data_dir(dir.path())?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        let refused = in_data_dir(dir.path()).err().map(|e| e.to_string());
        assert!(
            refused.as_deref().is_some_and(|m| m.contains("chmod 600")),
            "{refused:?}"
        );
        Ok(())
    }
}
