/** tiu's own version, recorded in manifests and snapshot userdata. */
export const TIU_VERSION = '0.1.0';
