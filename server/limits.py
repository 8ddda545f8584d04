"""Named input limits, each with the reason it exists.

Settings may lower or raise them per deployment; these are the defaults and the hard ceilings
the code is tested against (tests/server/test_hardening.py has one test per limit).
"""

from __future__ import annotations

# A 10-minute 1080p H.264 clip at social-media bitrates is ~150–250 MB; 512 MiB leaves headroom
# for high-bitrate phone footage while bounding the disk one upload can fill.
MAX_UPLOAD_BYTES = 512 * 1024 * 1024

# Verdicts are sampled, not exhaustive: beyond 30 minutes a check costs more than it tells,
# and longer media is mostly streams or compilations that should be checked by segment.
MAX_DURATION_S = 30 * 60

# 4K (3840x2160 ≈ 8.3 MP) is the largest size the extension meets; larger frames are either
# exotic or decompression bombs meant to exhaust memory (one 16k RGB frame is 800 MB).
MAX_FRAME_PIXELS = 3840 * 2160

# Frame rates above 240 fps are slow-motion captures or malformed timestamps; both make
# "frames per second of video" sampling meaningless.
MAX_FPS = 240.0

# Hard cap on sampled frames per check: at the default 2 frames/s this is 30 minutes, and it
# bounds the timeline stored in the database for any rate setting.
MAX_SAMPLED_FRAMES = 3600

# Hard cap on frames *decoded* (not just sampled) per check, so a file with absurd timestamps
# cannot keep the decoder busy forever: 30 min at 60 fps.
MAX_DECODED_FRAMES = 30 * 60 * 60

# Faces per sampled frame sent to the detector; crowd shots beyond this cost linearly and
# the largest faces carry the signal.
MAX_FACES_PER_FRAME = 8

# Sampling rate bounds: below 0.1 fps a 60 s clip gets 6 frames (too few to decide),
# above 30 fps sampling equals decoding every frame of typical web video.
MIN_SAMPLE_RATE = 0.1
MAX_SAMPLE_RATE = 30.0

# JSON request bodies (URL checks, look-ups) are tiny; anything bigger is abuse.
MAX_JSON_BYTES = 64 * 1024

# Bytes read from an upload before the container must be recognisable by its magic bytes.
SNIFF_BYTES = 64 * 1024

# Redirect hops followed when fetching a URL, each re-vetted: real video links need one or two
# (short link -> CDN); more is a loop or an attempt to wear the checks down (Mastodon follows 2).
FETCH_MAX_REDIRECTS = 3

# Ports a fetched URL may name: the web's own. Other ports on public hosts are admin panels,
# databases and mail servers an attacker wants us to talk to (Discourse's rule).
FETCH_ALLOWED_PORTS = frozenset({80, 443})

# A TCP+TLS handshake to a healthy CDN takes well under a second; 5 s also covers a slow
# mobile-grade upstream while bounding how long one check can hold a pending socket (Discourse: 5 s).
FETCH_CONNECT_TIMEOUT_S = 5.0

# Longest silence tolerated between two reads (including waiting for the response headers):
# a live server sends something every few hundred ms; a stalled one must not pin a check
# (Mastodon and Camo: 10 s).
FETCH_READ_TIMEOUT_S = 10.0

# Whole fetch, redirects and body included: MAX_UPLOAD_BYTES at ~40 Mbit/s is ~110 s, so a
# legitimate maximum-size video still fits while a slow-drip server is cut off.
FETCH_TOTAL_TIMEOUT_S = 120.0

# A fetched video is capped like an uploaded one; the count is kept while streaming, so a
# missing or lying Content-Length does not help.
FETCH_MAX_BYTES = MAX_UPLOAD_BYTES

# URLs longer than this are not video links but payloads; browsers and CDNs cap around 8 KiB.
FETCH_MAX_URL_CHARS = 8192

# Face crops in one purify_frames task: they are fitted as one batch, so this bounds a task's
# memory (32 is DIPConfig.fast()'s group, one GPU launch) and its share of the time limit.
PURIFY_MAX_CROPS_PER_TASK = 32

# Started-but-unfinished attempts at one crop's purification (worker killed, OOM, crash; also
# transient database errors) before it is recorded as failed: with acks_late and
# reject_on_worker_lost, a crop that kills its worker every time would otherwise be
# redelivered forever (Celery's "message loop").
PURIFY_MAX_ATTEMPTS = 3

# Frames the extension sends per request: a few seconds of sampled video; larger batches only
# delay the first result the user sees.
MAX_FRAMES_PER_REQUEST = 16

# One captured JPEG frame: a 1920x1080 frame at quality 90 is ~0.5–1 MB.
MAX_FRAME_JPEG_BYTES = 4 * 1024 * 1024

# Report-page thumbnails (server/db/thumbnails.py): a few small JPEGs per check. 24 covers the
# first face frames plus original/purified pairs of the tampered ones; 240 px is enough to see
# a face box and keeps one thumbnail ~10 KB, so a report page stays well under a megabyte.
MAX_THUMBNAILS_PER_CHECK = 24
THUMBNAIL_MAX_SIDE = 240
MAX_THUMBNAIL_BYTES = 64 * 1024

# Resolving a page URL with yt-dlp (server/media/resolve.py). A real page needs one to a few
# requests (page, player JSON, manifest); 16 bounds extractors that walk embeds or paginate.
RESOLVE_MAX_REQUESTS = 16

# Body bytes yt-dlp may read per request: a YouTube watch page is ~1–2 MB of HTML and JSON;
# anything much larger is not a page but a download yt-dlp must not make.
RESOLVE_MAX_RESPONSE_BYTES = 8 * 1024 * 1024

# Whole resolution, every request included: extractors that need longer are stuck or are being
# fed a slow drip, and the user is waiting for the check to start.
RESOLVE_TIMEOUT_S = 30.0

# An HLS or DASH manifest: a 30-minute VOD with 2 s segments is ~900 lines (~100 KB);
# megabytes of playlist are a parser attack, not a video.
PLAYLIST_MAX_BYTES = 2 * 1024 * 1024

# Segments (or variants) read from one manifest: 30 minutes of 0.5 s segments is 3600.
PLAYLIST_MAX_ENTRIES = 10_000

# Highest rendition picked from an HLS master playlist or DASH manifest: the detector works on
# face crops far smaller than 720p frames, and higher renditions only cost bytes and decode time.
STREAM_MAX_HEIGHT = 720

# A VOD stream up to this long is fetched whole; longer ones are sampled in windows.
STREAM_FULL_FETCH_S = 60.0

# Windows spread evenly over a long stream, and seconds of video in each: 8 × 6 s covers the
# start, the end and six points between (every part of a spliced video is a few windows away)
# for about 10% of a 10-minute stream's bytes.
STREAM_SAMPLE_WINDOWS = 8
STREAM_WINDOW_S = 6.0
