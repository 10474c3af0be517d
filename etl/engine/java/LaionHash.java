package laionetl;

import org.apache.spark.sql.api.java.UDF2;

/**
 * LAION's sample hash as a Spark SQL function, so JVM Spark hashes rows without sending them to a
 * Python worker: the first 64 bits of MurmurHash3_x64_128 (seed 0) of the UTF-8 bytes of
 * (url or "") + (text or ""), as a signed long, which is what Python's
 * {@code mmh3.hash64(...)[0]} returns (etl/engine/hashing.py is the reference).
 *
 * <p>The two strings are encoded to UTF-8 as they are hashed: neither the concatenation nor a
 * byte array is made. A lone surrogate has no UTF-8 encoding; Python's {@code str.encode} refuses
 * it and so fails the query, and so does this function (Java's own encoder would hash '?').
 */
public final class LaionHash implements UDF2<String, String, Long> {
    private static final long serialVersionUID = 1L;
    private static final long C1 = 0x87c37b91114253d5L;
    private static final long C2 = 0x4cf5ad432745937fL;

    @Override
    public Long call(String url, String text) {
        return hash(url, text);
    }

    /** The hash of url + text; null counts as the empty string. */
    public static long hash(String url, String text) {
        Murmur3 murmur = new Murmur3();
        murmur.addUtf8(url, "url");
        murmur.addUtf8(text, "text");
        return murmur.finish();
    }

    /** MurmurHash3_x64_128 over bytes given one at a time, a 16-byte block at a time. */
    private static final class Murmur3 {
        private long h1;
        private long h2;
        private long low;  // bytes 0..7 of the block being filled, little-endian
        private long high;  // bytes 8..15
        private long length;

        void addUtf8(String value, String argument) {
            if (value == null) {
                return;
            }
            for (int i = 0, n = value.length(); i < n; i++) {
                char c = value.charAt(i);
                if (c < 0x80) {
                    add(c);
                } else if (c < 0x800) {
                    add(0xc0 | c >> 6);
                    add(0x80 | c & 0x3f);
                } else if (!Character.isSurrogate(c)) {
                    add(0xe0 | c >> 12);
                    add(0x80 | c >> 6 & 0x3f);
                    add(0x80 | c & 0x3f);
                } else if (Character.isHighSurrogate(c) && i + 1 < n && Character.isLowSurrogate(value.charAt(i + 1))) {
                    int point = Character.toCodePoint(c, value.charAt(++i));
                    add(0xf0 | point >> 18);
                    add(0x80 | point >> 12 & 0x3f);
                    add(0x80 | point >> 6 & 0x3f);
                    add(0x80 | point & 0x3f);
                } else {
                    throw new IllegalArgumentException(String.format(
                        "laion_hash: the %s has a lone surrogate U+%04X at character %d, which is not valid"
                            + " Unicode and has no UTF-8 encoding (Python's mmh3 path refuses it too)",
                        argument, (int) c, i));
                }
            }
        }

        private void add(int octet) {
            int at = (int) (length & 15);
            if (at < 8) {
                low |= (octet & 0xffL) << (at << 3);
            } else {
                high |= (octet & 0xffL) << ((at - 8) << 3);
            }
            length++;
            if (at == 15) {
                mixBlock();
            }
        }

        private void mixBlock() {
            h1 ^= mixK1(low);
            h1 = Long.rotateLeft(h1, 27) + h2;
            h1 = h1 * 5 + 0x52dce729;
            h2 ^= mixK2(high);
            h2 = Long.rotateLeft(h2, 31) + h1;
            h2 = h2 * 5 + 0x38495ab5;
            low = 0;
            high = 0;
        }

        long finish() {
            // The tail (length % 16 bytes, zero-padded) is mixed without the block's rotations.
            h1 ^= mixK1(low);
            h2 ^= mixK2(high);
            h1 ^= length;
            h2 ^= length;
            h1 += h2;
            h2 += h1;
            h1 = fmix(h1);
            h2 = fmix(h2);
            return h1 + h2;
        }

        private static long mixK1(long k1) {
            return Long.rotateLeft(k1 * C1, 31) * C2;
        }

        private static long mixK2(long k2) {
            return Long.rotateLeft(k2 * C2, 33) * C1;
        }

        private static long fmix(long k) {
            k ^= k >>> 33;
            k *= 0xff51afd7ed558ccdL;
            k ^= k >>> 33;
            k *= 0xc4ceb9fe1a85ec53L;
            k ^= k >>> 33;
            return k;
        }
    }
}
