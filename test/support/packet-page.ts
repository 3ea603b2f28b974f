/** The page the AF_PACKET test sends, known to both its ends. */
export const TEST_PAGE = Uint8Array.from({ length: 4096 }, (_, i) => (i * 13 + 1) & 0xff);
