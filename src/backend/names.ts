/** The backends snowflock has (a leaf module: reports and the seam both name them). */
export const BACKENDS = ["kvm", "xen"] as const;
export type BackendName = (typeof BACKENDS)[number];
