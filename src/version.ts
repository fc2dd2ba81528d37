/** Version facts; release builds set them with `bun build --define`, source runs report the package version. */
import pkg from "../package.json" with { type: "json" };

declare const BUILD_VERSION: string | undefined;
declare const BUILD_DATE_ISO: string | undefined;
declare const BUILD_COMMIT: string | undefined;

export const VERSION: string = typeof BUILD_VERSION === "string" ? BUILD_VERSION : `${pkg.version}-dev`;
export const BUILD_DATE: string = typeof BUILD_DATE_ISO === "string" ? BUILD_DATE_ISO : "unknown";
export const COMMIT: string = typeof BUILD_COMMIT === "string" ? BUILD_COMMIT : "unknown";
