/* placeholder */
int x;
