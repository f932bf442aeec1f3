//! A mocked API server for the fast tier (in the style of kube-rs/controller-rs): each test lists
//! the exact requests it expects, in order, with the answer to give; anything else fails the
//! test. For the reconcile paths a real server cannot be made to take on demand (409 followed by
//! another object's uid, 404 mid-write, 422).

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// A check on a request's JSON body.
pub type BodyCheck = Box<dyn Fn(&serde_json::Value) + Send>;

/// One expected request and its answer.
pub struct Exchange {
    pub method: Method,
    /// The request path must end with this (e.g. `/certificatesigningrequests/x/approval`).
    pub path_suffix: String,
    pub status: StatusCode,
    pub body: serde_json::Value,
    /// Checks on the request body, if any.
    pub check: Option<BodyCheck>,
}

impl Exchange {
    pub fn new(method: Method, path_suffix: &str, status: u16, body: serde_json::Value) -> Self {
        Exchange {
            method,
            path_suffix: path_suffix.into(),
            status: StatusCode::from_u16(status).unwrap(),
            body,
            check: None,
        }
    }

    /// A PUT answered 409 Conflict.
    pub fn conflict(path_suffix: &str) -> Self {
        Self::new(
            Method::PUT,
            path_suffix,
            409,
            status(409, "Conflict", "the object has been modified"),
        )
    }

    /// A PUT refused with `code`.
    pub fn refuse(path_suffix: &str, code: u16, reason: &str, message: &str) -> Self {
        Self::new(
            Method::PUT,
            path_suffix,
            code,
            status(code, reason, message),
        )
    }

    /// A GET answered 404.
    pub fn not_found(path_suffix: &str) -> Self {
        Self::new(
            Method::GET,
            path_suffix,
            404,
            status(404, "NotFound", "not found"),
        )
    }

    pub fn checking(mut self, check: impl Fn(&serde_json::Value) + Send + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }
}

/// The fake server: answers in order, records what it saw.
#[derive(Clone, Default)]
pub struct FakeApi {
    script: Arc<Mutex<VecDeque<Exchange>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    pub fn new(script: Vec<Exchange>) -> Self {
        FakeApi {
            script: Arc::new(Mutex::new(script.into())),
            seen: Default::default(),
        }
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Every scripted request was made, and no other.
    pub fn assert_done(&self) {
        let left = self.script.lock().unwrap().len();
        assert_eq!(
            left,
            0,
            "{left} expected request(s) not made; seen: {:?}",
            self.seen()
        );
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl tower_service::Service<Request<Body>> for FakeApi {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let line = format!("{} {}", parts.method, parts.uri.path());
            this.seen.lock().unwrap().push(line.clone());
            let next = this.script.lock().unwrap().pop_front();
            let Some(ex) = next else {
                panic!("unexpected request {line}: nothing more was expected");
            };
            assert_eq!(parts.method, ex.method, "request {line}");
            assert!(
                parts.uri.path().ends_with(&ex.path_suffix),
                "request {line}, expected …{}",
                ex.path_suffix
            );
            if let Some(check) = &ex.check {
                let sent: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                check(&sent);
            }
            let body = serde_json::to_vec(&ex.body).unwrap();
            Ok(Response::builder()
                .status(ex.status)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap())
        })
    }
}

/// A `Status` object as the API server sends for errors.
pub fn status(code: u16, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}
