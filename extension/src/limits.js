// Named limits of the extension, each with the reason for its value.

// A JSON call to our own server answers in well under a second; 10 s covers a busy one.
export const REQUEST_TIMEOUT_MS = 10_000;
// Posting a batch of JPEG frames is bigger and the server decodes them before answering.
export const UPLOAD_TIMEOUT_MS = 30_000;
// Tries per request for transient failures (network, 429, 502/503/504), then the badge says so.
export const RETRY_ATTEMPTS = 4;
// Capped exponential backoff: 0.4, 0.8, 1.6 s … never more than 8 s between tries.
export const RETRY_BASE_MS = 400;
export const RETRY_CAP_MS = 8_000;
// The server sends an SSE comment every 15 s; two missed ones mean the stream is dead.
export const SSE_IDLE_MS = 35_000;
// Reconnects of the event stream (with Last-Event-ID) before falling back to polling.
export const SSE_RECONNECTS = 3;
// Polling fallback: start fast (checks take seconds), back off to a gentle rate.
export const POLL_FIRST_MS = 500;
export const POLL_CAP_MS = 5_000;
// A check nobody hears from for this long is reported as failed instead of spinning forever.
export const CHECK_DEADLINE_MS = 10 * 60_000;
// The worker is stopped when idle; an alarm wakes it to resume unfinished checks (30 s is Chrome's minimum).
export const RESUME_ALARM_MIN = 0.5;
// The model card changes only when the operator swaps the detector.
export const MODEL_CARD_TTL_MS = 10 * 60_000;

// Captured frames: the server accepts up to 1920x1080; 1280x720 keeps faces usable at a third of the bytes.
export const FRAME_MAX_WIDTH = 1280;
export const FRAME_MAX_HEIGHT = 720;
export const FRAME_JPEG_QUALITY = 0.85;
// The server samples 2 frames per second of video; capture at the same rate.
export const FRAME_INTERVAL_S = 0.5;
// Frames per video: 16 s of video at 2 fps is plenty for a verdict and bounds what we send.
export const FRAMES_MAX = 32;
// A looping clip is captured again while it has fewer frames than this (the server needs three
// with a face), for at most MAX_PASSES passes.
export const FRAMES_ENOUGH = 4;
export const MAX_PASSES = 3;
// Frames per upload request (the server takes at most 16): small batches show progress early.
export const FRAMES_PER_BATCH = 4;
// Frame hashes asked of the cache before anything is sent.
export const HASH_PROBE_FRAMES = 2;
// Stop capturing after this long even if the video keeps playing slowly or stalls.
export const CAPTURE_WALL_MS = 30_000;
// A video that shows no new frame for this long (paused, stalled) ends the capture.
export const FRAME_WAIT_MS = 2_500;
// Chrome allows two captureVisibleTab calls per second per extension.
export const TAB_CAPTURE_INTERVAL_MS = 600;
// A data: URL of one JPEG frame (the server's own limit is 4 MiB of bytes).
export const MAX_FRAME_DATA_URL_CHARS = 6_000_000;
// Lossless face patches (the tamper check needs exact pixels; JPEG hides a perturbation from it):
// the region around the faces the server last found and where their motion takes them, each box
// grown this much around its centre. The server's crop is 1.3x the box, so 2.2x leaves ~0.45 of a
// box's width for a face that turns or speeds up between frames.
export const PATCH_GROW = 2.2;
// A face that left its patch makes the next ones 1.5x larger, up to this (a close-up's whole frame).
export const PATCH_GROW_MAX = 6;
// Faces are moved on at their last speed for at most this long after the last frame that showed them.
export const PREDICT_MAX_S = 3;
// A data: URL of one PNG patch; a larger region is not sent (its frame is scored, not checked).
export const MAX_PATCH_DATA_URL_CHARS = 6_000_000;

// A page whose check has been silent this long asks the worker about it: that wakes a worker
// stopped while idle, which then resumes following the check (alarms fire every 30 s at best).
export const HEARTBEAT_MS = 4_000;

// Videos smaller than this (tracking pixels, decorations) get no badge and no check.
export const MIN_VIDEO_PX = 64;
// Slow rescan for shadow roots attached after their host was inserted (no mutation fires).
export const RESCAN_MS = 2_000;
// Strings that come from pages (URLs, messages) are cut at this length before storage.
export const MAX_URL_CHARS = 2048;
