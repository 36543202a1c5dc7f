//! [`IntoMethod`]: the settings a parameter group runs, with the steps of
//! the extension-trait methods their backend bound brings.

use super::{AdamStep, KfrogStep, MuonStep};
use crate::adamw::{adamw_step, AdamBackend, AdamWConfig};
use crate::backend::Backend;
use crate::config::Config;
use crate::kfrog::{kfrog_step, KfrogBackend, KfrogConfig};
use crate::method::Method;
use crate::muon::{muon_step, MatmulBackend, MuonConfig, MuonScratch, MuonShape, MuonState};
use crate::sgd::{ParamGrad, SgdConfig};

/// Settings a parameter group on backend `B` can run: what
/// [`Optimizer::new`](crate::Optimizer::new) and [`Optimizer::add_group`](crate::Optimizer::add_group) take. Implemented by
/// [`Config`] (FROG) and [`SgdConfig`] on every backend, by [`AdamWConfig`]
/// on an [`AdamBackend`], by [`KfrogConfig`] on a [`KfrogBackend`], by
/// [`MuonConfig`] on a [`MatmulBackend`], and by [`Method`] on a backend
/// with [`AdamBackend`] and [`KfrogBackend`], so that a group a backend
/// cannot run does not compile (rather than fail when made). Sealed.
///
/// A [`Method::Muon`] given as a [`Method`] is refused when the group is
/// made ([`RegistryError::MuonFromMethod`](crate::RegistryError::MuonFromMethod)):
/// requiring [`MatmulBackend`] of every [`Method`] would shut out the
/// backends without it (frog-cuda) from every other method, so a Muon
/// group is made from its [`MuonConfig`], whose bound is checked here.
///
/// Any backend makes FROG and SGD groups:
///
/// ```
/// fn groups<B: frog_core::Backend>(opt: &mut frog_core::Optimizer<B, 4>) {
///     let _ = opt.add_group(frog_core::Config::default());
///     let _ = opt.add_group(frog_core::SgdConfig::default());
/// }
/// ```
///
/// ```compile_fail,E0277
/// // A backend without `AdamBackend` cannot make an AdamW group.
/// fn adamw_group<B: frog_core::Backend>(opt: &mut frog_core::Optimizer<B, 4>) {
///     let _ = opt.add_group(frog_core::AdamWConfig::default());
/// }
/// ```
///
/// ```compile_fail,E0277
/// // Nor can a backend without `MatmulBackend` make a Muon group.
/// fn muon_group<B: frog_core::Backend>(opt: &mut frog_core::Optimizer<B, 4>) {
///     let _ = opt.add_group(frog_core::MuonConfig::default());
/// }
/// ```
pub trait IntoMethod<B: Backend>: sealed::IntoMethod<B> {}

impl<B: Backend> IntoMethod<B> for Config {}
impl<B: Backend> IntoMethod<B> for SgdConfig {}
impl<B: AdamBackend> IntoMethod<B> for AdamWConfig {}
impl<B: KfrogBackend> IntoMethod<B> for KfrogConfig {}
impl<B: MatmulBackend> IntoMethod<B> for MuonConfig {}
impl<B: AdamBackend + KfrogBackend> IntoMethod<B> for Method {}

/// The steps of the extension-trait methods on one backend, as
/// [`IntoMethod`] hands them over.
#[derive(Clone, Copy)]
pub struct ExtensionSteps<B: Backend> {
    pub(super) adam: Option<AdamStep<B>>,
    pub(super) kfrog: Option<KfrogStep<B>>,
    pub(super) muon: Option<MuonStep<B>>,
}

impl<B: Backend> ExtensionSteps<B> {
    const NONE: Self = Self { adam: None, kfrog: None, muon: None };
    fn adam() -> Self
    where
        B: AdamBackend,
    {
        Self { adam: Some(adamw_step::<B>), ..Self::NONE }
    }
    fn kfrog() -> Self
    where
        B: KfrogBackend,
    {
        Self { kfrog: Some(kfrog_step::<B>), ..Self::NONE }
    }
    fn muon() -> Self
    where
        B: MatmulBackend,
    {
        Self { muon: Some(muon_buffers::<B>), ..Self::NONE }
    }
}

/// [`muon_step`] on a parameter and gradient in buffers, as a function
/// pointer can hold it (the generic operands cannot be).
fn muon_buffers<B: MatmulBackend>(backend: &B, cfg: &MuonConfig, shape: &MuonShape, state: &mut MuonState<B>, scratch: &mut MuonScratch<B>, param: &mut B::Buffer, grad: &B::Buffer) -> Result<(), crate::Error<B::Error>> {
    muon_step(backend, cfg, shape, state, scratch, ParamGrad { param, grad })
}

/// The call behind [`IntoMethod`] (public in a private module: callers
/// can name the trait, not implement it).
pub(crate) mod sealed {
    use super::*;

    /// The method, with the steps of this backend it needs.
    pub trait IntoMethod<B: Backend> {
        /// The group's method and its extension steps.
        fn into_method(self) -> (Method, ExtensionSteps<B>);
    }

    impl<B: Backend> IntoMethod<B> for Config {
        fn into_method(self) -> (Method, ExtensionSteps<B>) {
            (Method::Frog(self), ExtensionSteps::NONE)
        }
    }

    impl<B: Backend> IntoMethod<B> for SgdConfig {
        fn into_method(self) -> (Method, ExtensionSteps<B>) {
            (Method::Sgd(self), ExtensionSteps::NONE)
        }
    }

    impl<B: AdamBackend> IntoMethod<B> for AdamWConfig {
        fn into_method(self) -> (Method, ExtensionSteps<B>) {
            (Method::AdamW(self), ExtensionSteps::adam())
        }
    }

    impl<B: KfrogBackend> IntoMethod<B> for KfrogConfig {
        fn into_method(self) -> (Method, ExtensionSteps<B>) {
            (Method::Kfrog(self), ExtensionSteps::kfrog())
        }
    }

    impl<B: MatmulBackend> IntoMethod<B> for MuonConfig {
        fn into_method(self) -> (Method, ExtensionSteps<B>) {
            (Method::Muon(self), ExtensionSteps::muon())
        }
    }

    impl<B: AdamBackend + KfrogBackend> IntoMethod<B> for Method {
        fn into_method(self) -> (Method, ExtensionSteps<B>) {
            match self {
                Method::AdamW(c) => <AdamWConfig as IntoMethod<B>>::into_method(c),
                Method::Kfrog(c) => <KfrogConfig as IntoMethod<B>>::into_method(c),
                m => (m, ExtensionSteps::NONE),
            }
        }
    }
}
