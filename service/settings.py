"""Service configuration from environment variables (prefix FACEGEN_) or a .env file."""

from pathlib import Path
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from models_core.precision import PrecisionChoice
from models_core.projection import DEFAULT_STEPS, DEFAULT_STEPS_FROM_ENCODER


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEGEN_", env_file=".env", extra="ignore")

    checkpoint_root: Path = Field(Path("checkpoints"), description="checkpoint store to serve from")
    study_dir: Path = Field(Path("docs/study"), description="the study's report (python -m trainer study), served at "
                            "/study/ and summarised on the page where the folder exists")
    models: list[str] | None = Field(None, description="model names to serve (JSON list); default: every model in the root")
    device: str = Field("cpu", description="cpu, cuda, cuda:N, or auto (CUDA where there is one)")
    precision: PrecisionChoice = Field("auto", description="auto: bf16 where the chip has native bf16 "
                                                           "(CUDA GPUs that support it, CPUs with AVX512-BF16 or AMX), fp32 elsewhere")
    compile: bool = Field(False, description="torch.compile each decoder as it loads: a slower start (~10 s per "
                          "model on a CPU, which needs a C++ compiler), faster forward passes")
    access_log: bool = Field(False, description="one log line per request; /metrics counts requests by route, "
                             "model and status either way, and under load the lines cost CPU the models could use")
    host: str = Field("127.0.0.1", description="interface to bind (0.0.0.0: every interface)")
    port: int = Field(8000, ge=1, le=65535, description="TCP port")
    max_batch: int = Field(64, ge=1, description="most images decoded in one forward pass (a larger request is decoded "
                           "alone); on a CPU 64 decodes as fast per image as 256 with a quarter of the memory, "
                           "a GPU may want more")
    inference_workers: int | None = Field(None, ge=1, le=64, description="threads running forward passes, each on its "
                                          "own batch; a pass alone uses every core, passes side by side share them. "
                                          "Default: one per core up to 4 on a CPU (one team across all cores stalls "
                                          "whenever the event loop takes a core), 1 on a GPU or with compile (compiled "
                                          "kernels fix their thread count when compiled)")
    max_wait_ms: float = Field(0.0, ge=0, description="how long a request waits for others to batch with; at 0 a "
                               "batch is what queued up during the previous forward pass, and a lone request never waits")
    max_queue_s: float = Field(1.0, ge=0, description="admission: a request is admitted while the work already "
                               "queued for its model (rows, at the rate recent forward passes ran) would be done within "
                               "this many seconds, otherwise answered 503 with Retry-After at once")
    shed_pace_ms: float = Field(100.0, ge=0, description="while a model can admit nothing more, requests for it "
                                "get their 503 after this pause, so that clients retrying at once cannot keep the CPU "
                                "busy with refusals")
    shed_rate: float = Field(200.0, gt=0, description="refusals answered per second at most, over all models: while "
                             "more clients than that are being refused, each refusal is held (clients held) / (this "
                             "rate) seconds instead of the pace (never past its Retry-After), so that however many clients "
                             "retry at once, answering them takes a bounded share of the CPU")
    loop_nice: int = Field(0, ge=0, le=19, description="nice value added to the event loop's thread (Linux), so that "
                           "under overload the decoder gets the cores before the loop that parses and refuses requests; "
                           "0 (default) leaves priorities alone. The loop then also yields to every other process on "
                           "the machine: use it on a machine that serves only")
    poll_seconds: float = Field(5.0, gt=0, description="how often the checkpoint root is checked for new versions")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_upload_pixels: int = Field(4096 * 4096, ge=1)
    max_files: int = Field(64, ge=1, description="most images in one /reconstruct upload")
    projection_steps: int = Field(DEFAULT_STEPS, ge=1, le=1000, description="GAN projection (/project, and /reconstruct and "
                                  "POST /interpolate for a GAN): Adam steps when the request names none")
    encoder_projection_steps: int = Field(DEFAULT_STEPS_FROM_ENCODER, ge=0, le=1000, description="the same for a GAN version that ships an "
                                          "encoder: its projections start from E(x), so a few steps refine it")
    projection_time_s: float = Field(8.0, gt=0, description="a projection stops after this many seconds with the "
                                     "best latents found so far (the response says how many steps it ran), so that "
                                     "every request answers within 10 s on 2 CPU cores; raise it for longer projections")
    max_projections: int = Field(2, ge=1, description="projections running at once; more are answered 503 at once. "
                                 "They share the inference threads with decoding, in slices of a few tens of ms")
    max_projection_faces: int = Field(8, ge=1, le=64, description="most faces one request may project")
    cache_mb: float = Field(64, ge=0, description="memory for cached PNG responses, in MiB (0: no cache)")
    max_old_versions: int = Field(4, ge=0, description="explicitly requested older versions held in memory (LRU), "
                                  "besides the latest of each model")
    max_old_versions_mb: float = Field(512, ge=0, description="bound on the memory those older versions take, in MiB")
    request_timeout_s: float = Field(60.0, gt=0, description="server-side deadline of a request: past it the client "
                                     "gets a JSON 504 and the request's work is dropped")
    retire_grace_s: float = Field(30.0, ge=0, description="how long a swapped-out version keeps serving the requests "
                                  "that already hold it; past it they get a 503 with Retry-After")
    shutdown_grace_s: float = Field(10.0, ge=0, description="on SIGTERM, how long in-flight requests get to finish "
                                    "before the process exits (Docker's default stop timeout is 10 s)")
    drain_s: float = Field(0.0, ge=0, description="on SIGTERM, how long the server keeps answering with /readyz at "
                           "503 before it closes its listener, so a load balancer that polls readiness stops sending "
                           "first (Kubernetes: its preStop pause does this)")
