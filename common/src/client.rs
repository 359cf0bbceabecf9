//! Channels to other services: lazy, so start-up order does not matter, and every call has a
//! deadline (the mesh retries; we do not wait forever).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::config::ConfigError;

/// A channel to `url` (`http://user-service:50051`) that connects on first use; a malformed URL
/// is a configuration error naming `setting`.
pub fn lazy_channel(setting: &str, url: &str) -> Result<Channel, ConfigError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ConfigError::new(setting, format!("not a URL: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}
