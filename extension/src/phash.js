// The 64-bit DCT perceptual hash of a frame, bit for bit the recipe of server/vision/phash.py:
// cv2's RGB→gray, the central 90 %, area-average resize to 32x32 (rounded to bytes, as cv2 does
// for uint8), orthonormal 2-D DCT-II, top-left 8x8 row-major, bit = coefficient > median of the
// 63 non-DC coefficients, first coefficient = most significant bit, 16 lowercase hex digits.

const SIZE = 32;
const LOW = 8;
const CENTER_FRACTION = 0.9;

// cv2's fixed-point RGB→gray weights (0.299, 0.587, 0.114 scaled by 2^14).
const R_W = 4899;
const G_W = 9617;
const B_W = 1868;

function gray(image) {
  const { data, width, height } = image;
  const out = new Uint8Array(width * height);
  for (let i = 0, p = 0; i < out.length; i++, p += 4) {
    out[i] = (data[p] * R_W + data[p + 1] * G_W + data[p + 2] * B_W + 8192) >> 14;
  }
  return out;
}

// Source pixel coverage of each destination cell along one axis, like cv2's INTER_AREA tables.
function areaTable(srcLen, dstLen) {
  const scale = srcLen / dstLen;
  const table = [];
  for (let d = 0; d < dstLen; d++) {
    const start = d * scale;
    const end = start + scale;
    const cells = [];
    for (let s = Math.floor(start); s < Math.min(Math.ceil(end), srcLen); s++) {
      const w = Math.min(end, s + 1) - Math.max(start, s);
      if (w > 1e-7) cells.push([s, w / scale]);
    }
    table.push(cells);
  }
  return table;
}

function resizeArea(pixels, width, x0, y0, w, h) {
  const xs = areaTable(w, SIZE);
  const ys = areaTable(h, SIZE);
  const out = new Float64Array(SIZE * SIZE);
  for (let dy = 0; dy < SIZE; dy++) {
    for (let dx = 0; dx < SIZE; dx++) {
      let sum = 0;
      for (const [sy, wy] of ys[dy]) {
        const row = (y0 + sy) * width + x0;
        for (const [sx, wx] of xs[dx]) sum += pixels[row + sx] * wx * wy;
      }
      out[dy * SIZE + dx] = Math.min(255, Math.max(0, Math.round(sum)));
    }
  }
  return out;
}

const COS = (() => {
  const table = new Float64Array(LOW * SIZE);
  for (let k = 0; k < LOW; k++) {
    const c = k === 0 ? Math.sqrt(1 / SIZE) : Math.sqrt(2 / SIZE);
    for (let n = 0; n < SIZE; n++) table[k * SIZE + n] = c * Math.cos((Math.PI * (2 * n + 1) * k) / (2 * SIZE));
  }
  return table;
})();

// The top-left LOWxLOW block of the orthonormal 2-D DCT-II of a SIZExSIZE block.
function lowDct(block) {
  const rows = new Float64Array(SIZE * LOW); // DCT along x of every row, first LOW terms
  for (let y = 0; y < SIZE; y++) {
    for (let k = 0; k < LOW; k++) {
      let s = 0;
      for (let x = 0; x < SIZE; x++) s += block[y * SIZE + x] * COS[k * SIZE + x];
      rows[y * LOW + k] = s;
    }
  }
  const out = new Float64Array(LOW * LOW);
  for (let ky = 0; ky < LOW; ky++) {
    for (let kx = 0; kx < LOW; kx++) {
      let s = 0;
      for (let y = 0; y < SIZE; y++) s += rows[y * LOW + kx] * COS[ky * SIZE + y];
      out[ky * LOW + kx] = s;
    }
  }
  return out;
}

/** The pHash of an RGBA ImageData-like ``{data, width, height}`` as 16 lowercase hex digits. */
export function phashHex(image) {
  const { width, height } = image;
  if (width < 2 || height < 2) throw new Error('frame too small to hash');
  const g = gray(image);
  const mh = Math.trunc((height * (1 - CENTER_FRACTION)) / 2);
  const mw = Math.trunc((width * (1 - CENTER_FRACTION)) / 2);
  const low = lowDct(resizeArea(g, width, mw, mh, width - 2 * mw, height - 2 * mh));
  const rest = Array.from(low.subarray(1)).sort((a, b) => a - b);
  const median = rest[(rest.length - 1) / 2];
  let hex = '';
  for (let i = 0; i < 64; i += 4) {
    let nibble = 0;
    for (let j = 0; j < 4; j++) nibble = (nibble << 1) | (low[i + j] > median ? 1 : 0);
    hex += nibble.toString(16);
  }
  return hex;
}

/** Bits that differ between two hex hashes. */
export function hammingHex(a, b) {
  let bits = 0;
  for (let i = 0; i < a.length; i++) {
    let x = Number.parseInt(a[i], 16) ^ Number.parseInt(b[i], 16);
    for (; x; x >>= 1) bits += x & 1;
  }
  return bits;
}
