// Types of up-flags.mjs (plain JavaScript: it runs before the TypeScript build).
export declare const UP_FLAGS: Record<string, { type: 'boolean' | 'string'; short?: string }>;
export declare function upFlagsRefusal(argv: string[]): string | undefined;
