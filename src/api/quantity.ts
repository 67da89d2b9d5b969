// Kubernetes quantities ("2Gi", "1.5", "500m", "1e3", or a plain integer) as exact values, with
// the same grammar and the same comparisons as the API server's CEL quantity() library, so the
// offline validator and the agent agree with what `kubectl apply` accepts.
import type { Quantity } from './generated/types.js';

/** A quantity that does not parse, or that does not fit what the caller asked for. */
export class QuantityError extends Error {
  override name = 'QuantityError';
}

const GRAMMAR =
  /^([+-]?)(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei)|([numkMGTPE])|[eE]([+-]?\d+))?$/;
const BINARY_EXPONENT: Record<string, number> = { Ki: 10, Mi: 20, Gi: 30, Ti: 40, Pi: 50, Ei: 60 };
const DECIMAL_EXPONENT: Record<string, number> = {
  n: -9,
  u: -6,
  m: -3,
  k: 3,
  M: 6,
  G: 9,
  T: 12,
  P: 15,
  E: 18,
};
const INT32_MAX = 2 ** 31 - 1;
const INT64_MAX = 2n ** 63n - 1n;
// Beyond 10^80 every value is treated as 10^80: far above any bound we check, and it keeps
// "1e2000000000" from making us compute a two-billion-digit number.
const HUGE_DIGITS = 80;
const NANO = 10n ** 9n;

/** An exact value: numerator / 10^9 (the API server rounds every quantity up to nano units). */
interface Nanos {
  nanos: bigint;
}

function decode(text: string): Nanos | undefined {
  const m = GRAMMAR.exec(text);
  if (!m) return undefined;
  const [, sign, whole, fraction, onlyFraction, binary, decimal, exponent] = m;
  const intDigits = whole ?? '';
  const fracDigits = fraction ?? onlyFraction ?? '';
  let exp10 = -fracDigits.length;
  let exp2 = 0;
  if (binary) exp2 = BINARY_EXPONENT[binary] ?? 0;
  else if (decimal) exp10 += DECIMAL_EXPONENT[decimal] ?? 0;
  else if (exponent !== undefined) {
    const e = Number(exponent);
    // The API server parses the exponent as a 32-bit integer; beyond it, not a quantity.
    if (!Number.isSafeInteger(e) || Math.abs(e) > INT32_MAX) return undefined;
    exp10 += e;
  }
  const digits = (intDigits + fracDigits).replace(/^0+(?=\d)/, '');
  let mantissa = BigInt(digits === '' ? '0' : digits);
  const negative = sign === '-';
  if (mantissa === 0n) return { nanos: 0n };

  const magnitude = digits.length + exp10 + Math.ceil(exp2 * Math.log10(2));
  let nanos: bigint;
  if (magnitude > HUGE_DIGITS) {
    nanos = 10n ** BigInt(HUGE_DIGITS + 9);
  } else if (magnitude < -HUGE_DIGITS) {
    nanos = 1n; // rounded up to one nano, see below
  } else {
    mantissa *= 2n ** BigInt(exp2);
    const shift = exp10 + 9;
    if (shift >= 0) nanos = mantissa * 10n ** BigInt(shift);
    else {
      // Round away from zero to the next nano, as the API server does ("ask for some, get some").
      const divisor = 10n ** BigInt(-shift);
      nanos = (mantissa + divisor - 1n) / divisor;
    }
    // Binary-suffixed quantities are capped at the int64 range by the API server.
    if (binary && nanos > INT64_MAX * NANO) nanos = INT64_MAX * NANO;
  }
  return { nanos: negative ? -nanos : nanos };
}

function text(q: Quantity): string {
  return typeof q === 'number' ? String(q) : q;
}

/** Whether a string is a Kubernetes quantity (CEL's isQuantity()). Signs are allowed here. */
export function isQuantity(q: Quantity): boolean {
  if (typeof q === 'number') return Number.isInteger(q);
  return decode(q) !== undefined;
}

function mustDecode(q: Quantity): Nanos {
  const value = typeof q === 'number' && !Number.isInteger(q) ? undefined : decode(text(q));
  if (!value) {
    throw new QuantityError(
      `'${text(q)}' is not a Kubernetes quantity (expected e.g. 512Mi, 2Gi, 1.5G, 1e9 or an integer)`,
    );
  }
  return value;
}

/** Compares two quantities exactly: -1, 0 or 1 (CEL's quantity(a).compareTo(quantity(b))). */
export function compareQuantities(a: Quantity, b: Quantity): -1 | 0 | 1 {
  const x = mustDecode(a).nanos;
  const y = mustDecode(b).nanos;
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * A quantity in bytes, rounded up to a whole byte: parseQuantity('1Gi') === 1073741824n.
 * Throws QuantityError naming the input when it is not a quantity, is negative, or is beyond
 * 2^63 - 1 bytes.
 */
export function parseQuantity(q: Quantity): bigint {
  const { nanos } = mustDecode(q);
  if (nanos < 0n) throw new QuantityError(`'${text(q)}' is negative; a size must be at least 0`);
  const bytes = (nanos + NANO - 1n) / NANO;
  if (bytes > INT64_MAX) throw new QuantityError(`'${text(q)}' is larger than 2^63 - 1 bytes`);
  return bytes;
}

const KIB = 1024n;
const MIB = KIB * KIB;
const BINARY_SUFFIXES = ['Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];

/**
 * An exact byte count as a Kubernetes quantity with the largest binary suffix that divides it
 * ("100Gi", "1536Mi", "4097"): what kubectl would print, and equal to what parseQuantity reads.
 */
export function bytesQuantity(bytes: bigint): string {
  if (bytes < 0n) throw new RangeError(`a byte count cannot be negative: ${bytes}`);
  let value = bytes;
  let suffix = '';
  for (const next of BINARY_SUFFIXES) {
    if (value === 0n || value % KIB !== 0n) break;
    value /= KIB;
    suffix = next;
  }
  return `${value}${suffix}`;
}

/** Whole MiB, rounded down. */
export function floorMiB(bytes: bigint): bigint {
  return (bytes / MIB) * MIB;
}
