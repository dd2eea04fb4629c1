//! Server reflection (v1 and v1alpha) that answers every request on its
//! stream.
//!
//! The reflection protocol answers a lookup that fails (an unknown file or
//! symbol) with an `ErrorResponse` on the stream, which stays open for the
//! next request, as the C++, Go and Java servers do. tonic-reflection ends
//! the whole stream with a status instead: the requests after it go
//! unanswered, and Python's descriptor database over reflection raises a
//! broken stream where its pool expects a `KeyError`. Each request here is
//! put to tonic-reflection's service on a stream of its own, in process,
//! and a refusal becomes the `ErrorResponse` it should have been. A
//! question about a type's extension numbers is answered naming the type,
//! or NOT_FOUND for a type that does not exist (tonic-reflection answers
//! any name with an empty list of no type). A file is sent with the files
//! it imports, transitively, that the stream has not yet been sent, as the
//! Go and C++ servers send them: tonic-reflection sends the file alone,
//! and a client that builds its types from one answer (grpc-js's
//! `loadFileDescriptorSetFromBuffer`) cannot resolve what it imports.

use std::collections::HashSet;

use prost::Message;

use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// The longest error message an answer carries.
const MAX_ERROR_MESSAGE: usize = 512;

macro_rules! answering_every_request {
    ($version:ident) => {
        pub mod $version {
            use super::*;
            use tonic_reflection::pb::$version::{
                ErrorResponse, ExtensionNumberResponse, ServerReflectionRequest,
                ServerReflectionResponse,
                server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
                server_reflection_server::{ServerReflection, ServerReflectionServer},
            };

            /// tonic-reflection's lookups, asked one request at a time.
            pub struct Reflection<S> {
                lookups: ServerReflectionServer<S>,
            }

            impl<S> Reflection<S> {
                pub fn new(lookups: ServerReflectionServer<S>) -> ServerReflectionServer<Self> {
                    ServerReflectionServer::new(Self { lookups })
                }
            }

            #[tonic::async_trait]
            impl<S: ServerReflection> ServerReflection for Reflection<S> {
                type ServerReflectionInfoStream =
                    ReceiverStream<Result<ServerReflectionResponse, Status>>;

                async fn server_reflection_info(
                    &self,
                    request: Request<Streaming<ServerReflectionRequest>>,
                ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
                    let mut requests = request.into_inner();
                    let mut lookups = ServerReflectionClient::new(self.lookups.clone());
                    let (answers, rx) = mpsc::channel(1);
                    tokio::spawn(async move {
                        // The files this stream has been sent.
                        let mut sent = HashSet::new();
                        while let Some(request) = requests.next().await {
                            let answer = match request {
                                Ok(request) => Ok(answer(&mut lookups, request, &mut sent).await),
                                // A message that does not decode ends the
                                // stream with its status.
                                Err(status) => Err(status),
                            };
                            let last = answer.is_err();
                            if answers.send(answer).await.is_err() || last {
                                return;
                            }
                        }
                    });
                    Ok(Response::new(ReceiverStream::new(rx)))
                }
            }

            type Lookups<S> = ServerReflectionClient<ServerReflectionServer<S>>;

            async fn answer<S: ServerReflection>(
                lookups: &mut Lookups<S>,
                request: ServerReflectionRequest,
                sent: &mut HashSet<String>,
            ) -> ServerReflectionResponse {
                let answer = |response| ServerReflectionResponse {
                    valid_host: request.host.clone(),
                    original_request: Some(request.clone()),
                    message_response: Some(response),
                };
                let refused = |status: Status| {
                    // The message quotes the name asked for, which the
                    // answer already echoes: quoted whole, a name near the
                    // message limit would take the answer past it.
                    let mut message = status.message().to_owned();
                    if message.len() > MAX_ERROR_MESSAGE {
                        let cut = message.floor_char_boundary(MAX_ERROR_MESSAGE);
                        message.truncate(cut);
                        message.push('…');
                    }
                    answer(MessageResponse::ErrorResponse(ErrorResponse {
                        error_code: status.code() as i32,
                        error_message: message,
                    }))
                };
                // tonic-reflection answers any name with no extensions and
                // no type; the type must exist, and is named in the answer.
                // (No message here declares extensions.)
                if let Some(MessageRequest::AllExtensionNumbersOfType(name)) =
                    &request.message_request
                {
                    let found = ServerReflectionRequest {
                        host: request.host.clone(),
                        message_request: Some(MessageRequest::FileContainingSymbol(name.clone())),
                    };
                    return match ask(lookups, found).await {
                        Ok(_) => answer(MessageResponse::AllExtensionNumbersResponse(
                            ExtensionNumberResponse {
                                base_type_name: name.clone(),
                                extension_number: Vec::new(),
                            },
                        )),
                        Err(status) => refused(status),
                    };
                }
                match ask(lookups, request.clone()).await {
                    Ok(mut response) => {
                        if let Some(MessageResponse::FileDescriptorResponse(files)) =
                            &mut response.message_response
                        {
                            let asked = std::mem::take(&mut files.file_descriptor_proto);
                            files.file_descriptor_proto =
                                with_imports(lookups, &request.host, asked, sent).await;
                        }
                        response
                    }
                    Err(status) => refused(status),
                }
            }

            /// `files` (encoded `FileDescriptorProto`s), then the files they
            /// import, transitively, that are not in `sent`; all of them
            /// are in `sent` afterwards.
            async fn with_imports<S: ServerReflection>(
                lookups: &mut Lookups<S>,
                host: &str,
                mut files: Vec<Vec<u8>>,
                sent: &mut HashSet<String>,
            ) -> Vec<Vec<u8>> {
                let mut next = 0;
                while let Some(encoded) = files.get(next) {
                    next += 1;
                    let Ok(file) = prost_types::FileDescriptorProto::decode(encoded.as_slice())
                    else {
                        continue;
                    };
                    sent.insert(file.name().to_owned());
                    for import in file.dependency {
                        if !sent.insert(import.clone()) {
                            continue;
                        }
                        let request = ServerReflectionRequest {
                            host: host.to_owned(),
                            message_request: Some(MessageRequest::FileByFilename(import)),
                        };
                        // A file the server does not have is left to the
                        // client to ask for, and be refused.
                        if let Ok(ServerReflectionResponse {
                            message_response: Some(MessageResponse::FileDescriptorResponse(found)),
                            ..
                        }) = ask(lookups, request).await
                        {
                            files.extend(found.file_descriptor_proto);
                        }
                    }
                }
                files
            }

            /// tonic-reflection's answer to `request`, or its refusal.
            async fn ask<S: ServerReflection>(
                lookups: &mut Lookups<S>,
                request: ServerReflectionRequest,
            ) -> Result<ServerReflectionResponse, Status> {
                lookups
                    .server_reflection_info(tokio_stream::once(request))
                    .await?
                    .into_inner()
                    .message()
                    .await?
                    .ok_or_else(|| Status::internal("the lookup gave no answer"))
            }
        }
    };
}

answering_every_request!(v1);
answering_every_request!(v1alpha);
