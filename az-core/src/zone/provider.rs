//! What a zone provider is: the [`ZoneProvider`] trait each provider file implements, the
//! [`ProbeError`] a probe fails with, and the `zone_providers!` macro that turns the registry in
//! `zone/mod.rs` into the public [`Provider`](super::Provider) enum and its dispatch.

use std::future::Future;
use std::time::Duration;

use super::{DiscoveryConfig, Env, Zone};

/// A source that can tell the zone. Each implementation is a unit struct in a file of its own
/// and is listed once in the registry in `zone/mod.rs`; the chain runs every provider
/// concurrently, so an implementation only answers for itself and never looks at the others.
pub(crate) trait ZoneProvider {
    /// Asks for the zone. `timeout` bounds each request the provider makes; the chain also
    /// bounds the whole probe by it, so a provider that hangs costs one timeout and no more.
    /// The future is `Send` because the programs run discovery on spawned tasks.
    fn probe(
        &self,
        config: &DiscoveryConfig,
        env: &Env,
        timeout: Duration,
    ) -> impl Future<Output = Result<Zone, ProbeError>> + Send;
}

/// Errors of a single metadata probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The provider did not answer within its timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The provider is disabled by the environment.
    #[error("disabled by {0}")]
    Disabled(&'static str),
    /// The endpoint setting is not a usable URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The HTTP exchange failed.
    #[error("request to {url} failed: {reason}")]
    Http {
        /// The URL asked.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The answer was not in the expected form.
    #[error("unexpected answer from {url}: {reason}")]
    Malformed {
        /// The URL asked.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// Declares the providers, in the order the chain tries them by default, one line each:
/// `module::Type = "name"`, where `module` is a file in `zone/` and `Type` a unit struct in it
/// implementing [`ZoneProvider`]. The list is the single place that names a provider, so the macro
/// derives from it everything else that has to agree with it:
/// - the public `Provider` enum, a variant named after each type and documented by the line's doc
///   comment, spelled `name` in configuration (serde) and output (`Display`);
/// - `Provider::ALL`, the providers in list order (also the default of `providers`);
/// - `Provider::probe`, which hands a probe to the provider's implementation.
macro_rules! zone_providers {
    ($($(#[$attr:meta])* $module:ident :: $kind:ident = $name:literal,)+) => {
        /// A cloud metadata provider that can tell the zone.
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize,
        )]
        pub enum Provider {
            $(
                $(#[$attr])*
                #[serde(rename = $name)]
                $kind,
            )+
        }

        impl Provider {
            /// Every provider, in the order the chain tries them.
            pub const ALL: [Provider; [$($name),+].len()] = [$(Provider::$kind),+];

            /// Asks this provider for the zone through its implementation.
            pub(crate) async fn probe(
                self,
                config: &$crate::zone::DiscoveryConfig,
                env: &$crate::zone::Env,
                timeout: ::std::time::Duration,
            ) -> ::core::result::Result<$crate::zone::Zone, $crate::zone::ProbeError> {
                use $crate::zone::provider::ZoneProvider as _;
                match self {
                    $(Provider::$kind => $module::$kind.probe(config, env, timeout).await,)+
                }
            }
        }

        impl ::std::fmt::Display for Provider {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(match self {
                    $(Provider::$kind => $name,)+
                })
            }
        }
    };
}

pub(super) use zone_providers;
